package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/octo-worker/octo-worker/dispatch/store"
)

// The sealed columns of operations and the associated data each value is sealed with (keyring.go).
const (
	adSecrets    = "secrets"
	adSealingKey = "sealing key"
)

// sealSecrets returns the secrets column as stored (sealed) and the id of its key, both NULL for none.
func (s *Store) sealSecrets(secrets *string) (any, any) {
	if secrets == nil {
		return nil, nil
	}
	b, id := s.keys.seal([]byte(*secrets), adSecrets)
	return b, int64(id)
}

// sealSealingKey returns the sealing key as stored (sealed) and the id of its key, both NULL for none.
func (s *Store) sealSealingKey(key []byte) (any, any) {
	if key == nil {
		return nil, nil
	}
	b, id := s.keys.seal(key, adSealingKey)
	return b, int64(id)
}

// openSealingKey opens a stored sealing key; nil stays nil.
func (s *Store) openSealingKey(sealed []byte) ([]byte, error) {
	if sealed == nil {
		return nil, nil
	}
	return s.keys.open(sealed, adSealingKey)
}

func (s *Store) openSecrets(sealed string) (string, error) {
	b, err := s.keys.open([]byte(sealed), adSecrets)
	return string(b), err
}

// scanFull reads opCols, body and secrets (opened).
func (s *Store) scanFull(row scanner) (opRow, error) {
	return store.ScanOpOpening(row, true, s.openSecrets)
}

// scanFulls reads every row of rows as scanFull does.
func (s *Store) scanFulls(rows *sql.Rows) ([]opRow, error) { return scanAll(rows, nil, s.scanFull) }

// scanKid reads a key id.
func scanKid(r scanner) (uint32, error) {
	var id int64
	err := r.Scan(&id)
	return uint32(id), err
}

// sealedCols are the sealed columns with the column of their key's id, and their associated data.
var sealedCols = []struct{ col, kid, ad string }{{"secrets", "secrets_kid", adSecrets}, {"sealing_key", "sealing_kid", adSealingKey}}

// retireSoon makes the writer retire the keys of the values a write of the current group erased, retireDelay
// after the group commits (rekey). Writes that end operations call it; it runs on the writer goroutine.
func (s *Store) retireSoon() { s.ended = true }

// rekey retires the keys the triggers recorded in ended_keys: it seals every live value still under one of
// them again under the current key, in one transaction on the writer (between groups), and then has the
// filer drop them from the key file. The current key, when among them, is rotated first; if it cannot be yet
// (the next key is not on file), it stays recorded for the next rekey.
func (s *Store) rekey() {
	retired, err := s.resealEnded(context.Background())
	if err != nil {
		s.log.WithError(err).Error("retiring the sealing keys of ended operations (retried at the next end)")
		return
	}
	if len(retired) > 0 {
		s.keys.retire(retired)
	}
}

func (s *Store) resealEnded(ctx context.Context) ([]uint32, error) {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer func() { _ = tx.Rollback() }() // after Commit it does nothing
	rows, err := s.txQuery(ctx, tx, `SELECT kid FROM ended_keys`)
	if err != nil {
		return nil, fmt.Errorf("reading ended_keys: %w", err)
	}
	ended, err := scanAll(rows, nil, scanKid)
	if err != nil || len(ended) == 0 {
		return nil, err
	}
	cur := s.keys.current(ended)
	retire := slices.DeleteFunc(ended, func(id uint32) bool { return id == cur })
	for _, id := range retire {
		if err := s.reseal(ctx, tx, `= ?`, int64(id)); err != nil {
			return nil, err
		}
	}
	ids, _ := json.Marshal(retire)
	if _, err := s.txExec(ctx, tx, `DELETE FROM ended_keys WHERE kid IN (SELECT value FROM json_each(?))`, string(ids)); err != nil {
		return nil, fmt.Errorf("clearing ended_keys: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return nil, err
	}
	s.committed.Store(true)
	return retire, nil
}

// sealedSQL selects the seq, the value and whether it is in clear of every live value of column col whose key
// id column kid matches cond (e.g. "= ?").
func sealedSQL(col, kid, cond string) string {
	return `SELECT seq, ` + col + `, ` + kid + ` IS NULL FROM operations WHERE ` + col + ` IS NOT NULL AND ` + kid + ` ` + cond
}

// sealedValue is a row of sealedSQL.
type sealedValue struct {
	seq   int64
	v     []byte
	clear bool // held in clear (no key id)
}

func scanSealed(r scanner) (sealedValue, error) {
	var v sealedValue
	return v, r.Scan(&v.seq, &v.v, &v.clear)
}

// reseal seals, under the current key and in tx, every live value whose key id column matches cond: "= ?"
// with a key's id seals again the values under that key, "IS NULL" seals the values held in clear.
func (s *Store) reseal(ctx context.Context, tx *sql.Tx, cond string, args ...any) error {
	for _, c := range sealedCols {
		rows, err := s.txQuery(ctx, tx, sealedSQL(c.col, c.kid, cond), args...)
		if err != nil {
			return fmt.Errorf("reading sealed %s: %w", c.ad, err)
		}
		vals, err := scanAll(rows, nil, scanSealed)
		if err != nil {
			return fmt.Errorf("reading sealed %s: %w", c.ad, err)
		}
		for _, v := range vals {
			plain := v.v
			if !v.clear {
				if plain, err = s.keys.open(v.v, c.ad); err != nil {
					return err
				}
			}
			sealed, id := s.keys.seal(plain, c.ad)
			if _, err := s.txExec(ctx, tx, `UPDATE operations SET `+c.col+` = ?, `+c.kid+` = ? WHERE seq = ?`,
				sealed, int64(id), v.seq); err != nil {
				return fmt.Errorf("sealing %s again: %w", c.ad, err)
			}
		}
	}
	return nil
}

// liveKidsSQL lists the keys of live sealed values; inClearSQL counts the operations with values in clear.
const (
	liveKidsSQL = `SELECT secrets_kid FROM operations WHERE secrets IS NOT NULL AND secrets_kid IS NOT NULL
		UNION SELECT sealing_kid FROM operations WHERE sealing_key IS NOT NULL AND sealing_kid IS NOT NULL`
	inClearSQL = `SELECT COUNT(*) FROM operations WHERE (secrets IS NOT NULL AND secrets_kid IS NULL)
		OR (sealing_key IS NOT NULL AND sealing_kid IS NULL)`
)

// openKeys opens the keyring of the database at path (see openKeyring) and seals the values a database from
// before sealed values (or a backup) holds in clear. It reports whether it sealed any: their clear copies in
// the WAL must then be truncated away.
func (s *Store) openKeys(ctx context.Context, path string) (bool, error) {
	rows, err := s.w.QueryContext(ctx, liveKidsSQL)
	if err != nil {
		return false, fmt.Errorf("listing the keys of sealed values: %w", err)
	}
	live, err := scanAll(rows, nil, scanKid)
	if err != nil {
		return false, fmt.Errorf("listing the keys of sealed values: %w", err)
	}
	if s.keys, err = openKeyring(path, live, s.log); err != nil {
		return false, err
	}
	var sealed bool
	err = s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		// Keys a crash left recorded are gone from the file now (openKeyring kept the live ones only).
		if _, err := s.txExec(ctx, tx, `DELETE FROM ended_keys`); err != nil {
			return err
		}
		var n int
		if err := s.txRow(ctx, tx, inClearSQL).Scan(&n); err != nil || n == 0 {
			return err
		}
		sealed = true
		s.log.WithField("operations", n).Info("sealing the sensitive values the database held in clear (once)")
		return s.reseal(ctx, tx, `IS NULL`)
	})
	if err != nil {
		_ = s.keys.close()
		return false, fmt.Errorf("sealing the values held in clear: %w", err)
	}
	return sealed, nil
}
