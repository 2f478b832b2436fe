package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgxlisten"
	"github.com/sirupsen/logrus"

	"github.com/octo-worker/octo-worker/dispatch/wake"
)

// Several dispatch servers on one database: the wake-ups between them travel as NOTIFY on one channel, and
// periodic sweeps take an advisory lock so that one server runs each at a time.

// wakeChannel is the channel the servers' wake-ups are sent on.
const wakeChannel = "octo_worker_wake"

// maxPayload bounds one notification's payload (PostgreSQL refuses 8000 bytes and more).
const maxPayload = 7000

// listenerName is the application_name of the listener's connection.
const listenerName = "octo-worker wake listener"

// reconnectDelay is how long the listener waits before it connects again after losing its connection.
const reconnectDelay = time.Second

// Bus returns a wake.Bus for one server process over LISTEN/NOTIFY: what it publishes reaches the Listen of
// every other Bus on the same database (each Bus is told apart by a random origin, and does not hear its own
// signals).
//
// The server publishes after its transaction commits, not inside it with pg_notify: the store methods stay
// free of signalling (and the same in both drivers), the server alone knows whom a change wakes, and all
// the signals that wait are sent in one statement. A server that dies between its commit and its publish
// delays the other servers' waiters until their slow re-check; it loses nothing.
func (s *Store) Bus() wake.Bus {
	return newBus(s.pool, s.log)
}

func newBus(pool *pgxpool.Pool, log *logrus.Entry) *bus {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return &bus{pool: pool, origin: hex.EncodeToString(b[:]), log: log.WithField("component", "wake-bus"), reconnect: reconnectDelay}
}

type bus struct {
	pool      *pgxpool.Pool
	origin    string
	log       *logrus.Entry
	reconnect time.Duration
}

// notification is the payload of one notification: signals of one origin.
type notification struct {
	From    string       `json:"f"`
	Signals []wireSignal `json:"s"`
}

type wireSignal struct {
	Kind         wake.Kind `json:"k"`
	ID           string    `json:"i,omitempty"`
	Pool         string    `json:"p,omitempty"`
	Capabilities []string  `json:"c,omitempty"`
	Profile      string    `json:"r,omitempty"`
}

// Publish sends sigs in as few notifications as fit, in one statement.
func (b *bus) Publish(ctx context.Context, sigs []wake.Signal) error {
	payloads, err := b.payloads(sigs)
	if err != nil {
		return err
	}
	if _, err := b.pool.Exec(ctx, "SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p", wakeChannel, payloads); err != nil {
		return fmt.Errorf("sending wake-ups on channel %s: %w", wakeChannel, err)
	}
	return nil
}

// payloads packs sigs into notification payloads of at most maxPayload bytes.
func (b *bus) payloads(sigs []wake.Signal) ([]string, error) {
	head := `{"f":"` + b.origin + `","s":[`
	var out []string
	cur := []byte(head)
	for _, sig := range sigs {
		w := wireSignal{Kind: sig.Kind, ID: sig.ID}
		if sig.Kind == wake.Ready {
			w = wireSignal{Kind: sig.Kind, ID: sig.Ticket.ID, Pool: sig.Ticket.Pool, Capabilities: sig.Ticket.Capabilities, Profile: sig.Ticket.Profile}
		}
		enc, err := json.Marshal(w)
		if err != nil {
			return nil, fmt.Errorf("encoding a wake-up: %w", err)
		}
		if len(head)+len(enc)+2 > maxPayload { // cannot be sent alone: every waiter re-checks instead
			enc = []byte(fmt.Sprintf(`{"k":%d}`, wake.All))
		}
		if len(cur)+1+len(enc)+2 > maxPayload {
			out = append(out, string(append(cur, "]}"...)))
			cur = []byte(head)
		}
		if len(cur) > len(head) {
			cur = append(cur, ',')
		}
		cur = append(cur, enc...)
	}
	if len(cur) > len(head) {
		out = append(out, string(append(cur, "]}"...)))
	}
	return out, nil
}

// Listen listens on a connection of its own (outside the pool) and calls hear with the other origins'
// signals; after each LISTEN (at start, and after reconnecting from a lost connection) it calls
// hear(wake.All), since what was sent in between is lost.
func (b *bus) Listen(ctx context.Context, hear func(wake.Signal)) error {
	connCfg := b.pool.Config().ConnConfig.Copy()
	connCfg.RuntimeParams["application_name"] = listenerName // so pg_stat_activity names it
	l := &pgxlisten.Listener{
		Connect: func(ctx context.Context) (*pgx.Conn, error) { return pgx.ConnectConfig(ctx, connCfg) },
		LogError: func(ctx context.Context, err error) {
			if ctx.Err() == nil {
				b.log.WithError(err).Warn("listening for the other servers' wake-ups (reconnecting; waiters re-check meanwhile)")
			}
		},
		ReconnectDelay: b.reconnect,
	}
	l.Handle(wakeChannel, handler{b: b, hear: hear})
	err := l.Listen(ctx)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// handler turns notifications into signals.
type handler struct {
	b    *bus
	hear func(wake.Signal)
}

// HandleBacklog runs right after LISTEN: whatever was sent before is lost, so every waiter re-checks once.
func (h handler) HandleBacklog(context.Context, string, *pgx.Conn) error {
	h.hear(wake.Signal{Kind: wake.All})
	return nil
}

func (h handler) HandleNotification(_ context.Context, n *pgconn.Notification, _ *pgx.Conn) error {
	var msg notification
	if err := json.Unmarshal([]byte(n.Payload), &msg); err != nil {
		// Not ours to understand (another program on the channel?): wake everyone rather than miss a wake-up.
		h.hear(wake.Signal{Kind: wake.All})
		return fmt.Errorf("decoding a wake-up on channel %s: %w", wakeChannel, err)
	}
	if msg.From == h.b.origin {
		return nil // this server woke its own waiters already
	}
	for _, w := range msg.Signals {
		sig := wake.Signal{Kind: w.Kind, ID: w.ID}
		if w.Kind == wake.Ready {
			sig = wake.Signal{Kind: w.Kind, Ticket: wake.Ticket{ID: w.ID, Pool: w.Pool, Capabilities: w.Capabilities, Profile: w.Profile}}
		}
		h.hear(sig)
	}
	return nil
}

// Exclusively runs fn while holding the session advisory lock of name, unless another session holds it now
// (then it returns false at once). The lock lives on a pooled connection held for the run: if the server
// dies, PostgreSQL ends the session and the lock goes with it.
func (s *Store) Exclusively(ctx context.Context, name string, fn func(context.Context) error) (bool, error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return false, fmt.Errorf("taking a connection for the %s lock: %w", name, err)
	}
	key := lockKey(name)
	var ok bool
	if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", key).Scan(&ok); err != nil {
		conn.Release()
		return false, fmt.Errorf("taking the %s lock: %w", name, err)
	}
	if !ok {
		conn.Release()
		return false, nil
	}
	ferr := fn(ctx)
	unlockCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if _, err := conn.Exec(unlockCtx, "SELECT pg_advisory_unlock($1)", key); err != nil {
		// Close the session rather than return it to the pool holding the lock.
		_ = conn.Hijack().Close(unlockCtx)
		return true, errors.Join(ferr, fmt.Errorf("releasing the %s lock: %w", name, err))
	}
	conn.Release()
	return true, ferr
}

// lockKey is the advisory lock key of a sweep name (in a namespace of its own: "octo-worker sweep ").
func lockKey(name string) int64 {
	h := fnv.New64a()
	h.Write([]byte("octo-worker sweep " + name))
	return int64(h.Sum64())
}
