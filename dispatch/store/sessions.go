package store

import (
	"context"
	"time"
)

// Sessions keeps the web portal's logins in the database, so that every server sharing it knows them (a
// browser behind a balancer may reach any of them).
type Sessions interface {
	// StartSession stores a login, after deleting the logins ended at its start; past MaxSessions live
	// logins, the ones ending first end now.
	StartSession(ctx context.Context, s Session) error
	// Session returns the login whose cookie hashes to hash, live at now, or ErrNotFound.
	Session(ctx context.Context, hash []byte, now time.Time) (Session, error)
	// EndSession deletes a login (a logout); none is not an error.
	EndSession(ctx context.Context, hash []byte) error
}

// Session is one portal login. The cookie is never stored: only its SHA-256.
type Session struct {
	Hash    []byte
	CSRF    string // the token every form of the login carries
	Started time.Time
	Expires time.Time
}

// MaxSessions bounds the live portal logins kept.
const MaxSessions = 1000
