package sqlite

import (
	"bufio"
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
)

// Sealed values: an operation's sensitive values (its secrets column) and the key that opens its pod's log
// records (sealing_key) are stored sealed with AES-256-GCM under a key kept in a file beside the database
// (KeysPath), never in the database or its WAL. A value's key is retired soon after its operation ends:
// every value still live under that key is sealed again under another one, and the key is dropped from the
// file. What the WAL and the free space of the database still hold of the value is then ciphertext whose key
// no file holds (a cryptographic erase). That replaced truncating the WAL after each end, which held the
// single writer while readers left the WAL and it copied and synced the file, and was the tail of the
// hand-off's latency with 10,000 workers waiting (ARCHITECTURE.md, Capacity).
//
// Keys: every value is sealed under the current key (cur). Once rotateAfter values are sealed under it, or
// when it must be retired, the next key (next), written to the file beforehand, becomes current and a new next
// is written. The file is rewritten (atomically: a temporary file, synced, renamed over it, the directory
// synced) by the filer goroutine, never by the writer; before a rewrite that drops keys it syncs the WAL, so
// the commit that moved their values off them is on disk before they go. A key dropped from the file stays in
// memory for keepRetired, for readers whose snapshot predates that commit.
//
// Which keys to retire: triggers (migration 0011) record the key of every sealed value that an UPDATE sets
// to NULL (an operation ended) or a DELETE removes, in the table ended_keys; rekey, on the writer, reads it
// retireDelay after such a commit.

const (
	sealVersion = 1
	sealHeader  = 1 + 4 + 12 // version, key id, nonce
	keysMagic   = "octo-worker sealing keys v1"
	rotateAfter = 256
	keepRetired = 10 * time.Second
	retireDelay = 200 * time.Millisecond
)

// KeysPath is the file of the keys that seal the sensitive values of the database at path.
func KeysPath(path string) string { return path + "-keys" }

// lockDatabase takes the lock that makes a store the only one using the database at path (a file beside it,
// path+"-keys.lock", locked with flock until the returned file is closed): two stores would each write the
// key file with keys of their own and drop the other's. SQLite serves one server; several need PostgreSQL.
func lockDatabase(path string) (*os.File, error) {
	name := KeysPath(path) + ".lock"
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening the lock %s: %w", name, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("another octo-worker server uses the database %s (it holds the lock %s): a SQLite database serves one server; stop the other one, or use PostgreSQL (--db postgres://...) for several", path, name)
		}
		return nil, fmt.Errorf("locking %s: %w", name, err)
	}
	return f, nil
}

type sealKey struct {
	raw  []byte
	aead cipher.AEAD
}

func newSealKey(raw []byte) (*sealKey, error) {
	b, err := aes.NewCipher(raw)
	if err != nil {
		return nil, err
	}
	g, err := cipher.NewGCM(b)
	if err != nil {
		return nil, err
	}
	return &sealKey{raw: raw, aead: g}, nil
}

// keyring holds the keys, writes their file and seals and opens values.
type keyring struct {
	path string // the key file
	wal  string // the database's WAL, synced before a rewrite that drops keys
	log  *logrus.Entry

	mu      sync.Mutex
	keys    map[uint32]*sealKey  // every key that opens values: on file, to be written, or retired less than keepRetired ago
	retired map[uint32]time.Time // keys no longer on (or no longer for) the file, and since when
	onFile  map[uint32]bool      // the keys the file held after its last rewrite
	cur     uint32
	next    uint32 // 0 while none is ready
	last    uint32 // the highest id given out
	sealed  int    // values sealed under cur
	failing bool   // the last rewrite failed (logged once)

	wake    chan struct{} // to the filer: rewrite the file
	stop    chan struct{}
	stopped chan struct{}
}

// readKeys reads the key file at path: no file is no keys.
func readKeys(path string) (map[uint32]*sealKey, error) {
	keys := map[uint32]*sealKey{}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return keys, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the sealing keys %s: %w", path, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	if !sc.Scan() || sc.Text() != keysMagic {
		return nil, fmt.Errorf("%s is not a file of sealing keys (its first line is not %q); restore it from where it was", path, keysMagic)
	}
	for n := 2; sc.Scan(); n++ {
		id, enc, ok := strings.Cut(sc.Text(), " ")
		v, err := strconv.ParseUint(id, 10, 32)
		raw, derr := base64.StdEncoding.DecodeString(enc)
		if !ok || err != nil || derr != nil || v == 0 || len(raw) != 32 {
			return nil, fmt.Errorf("%s line %d: want \"ID BASE64-KEY\" (a 32-byte key); restore the file from where it was", path, n)
		}
		k, err := newSealKey(raw)
		if err != nil {
			return nil, fmt.Errorf("%s line %d: %w", path, n, err)
		}
		keys[uint32(v)] = k
	}
	return keys, sc.Err()
}

// openKeyring reads the key file of the database at path and makes new current and next keys. live are the
// ids of the keys that sealed values in the database: each must be in the file. The file is rewritten at once
// to hold only live and the new keys (keys a crash left on it are dropped).
func openKeyring(path string, live []uint32, log *logrus.Entry) (*keyring, error) {
	k := &keyring{path: KeysPath(path), wal: path + "-wal", log: log, retired: map[uint32]time.Time{}, onFile: map[uint32]bool{},
		wake: make(chan struct{}, 1), stop: make(chan struct{}), stopped: make(chan struct{})}
	onFile, err := readKeys(k.path)
	if err != nil {
		return nil, err
	}
	k.keys = map[uint32]*sealKey{}
	// New ids follow those on file. One retired before a restart may be given again to a new key: what the
	// WAL still holds under the old one then fails to open (GCM checks the key), and nothing live used it.
	for id := range onFile {
		k.last = max(k.last, id)
	}
	for _, id := range live {
		key, ok := onFile[id]
		if !ok {
			return nil, fmt.Errorf("the database refers to sealing key %d, which %s does not hold: the sensitive values of its queued and running operations cannot be opened; restore %s from where it was (or a backup of the database taken with 'octo-worker server backup', which holds them)",
				id, k.path, k.path)
		}
		k.keys[id] = key
	}
	if k.cur, err = k.add(); err != nil {
		return nil, err
	}
	if k.next, err = k.add(); err != nil {
		return nil, err
	}
	if err := k.rewrite(); err != nil {
		return nil, err
	}
	go k.filer()
	return k, nil
}

// add makes a new key; the caller holds mu or owns k alone.
func (k *keyring) add() (uint32, error) {
	raw := make([]byte, 32)
	_, _ = rand.Read(raw) // never fails (it crashes the program instead)
	key, err := newSealKey(raw)
	if err != nil {
		return 0, err
	}
	k.last++
	k.keys[k.last] = key
	return k.last, nil
}

// seal seals plain under the current key; ad binds it to its column. It returns the sealed value and the key's id.
func (k *keyring) seal(plain []byte, ad string) ([]byte, uint32) {
	k.mu.Lock()
	if k.sealed >= rotateAfter {
		k.rotate()
	}
	id, key := k.cur, k.keys[k.cur]
	k.sealed++
	k.mu.Unlock()
	out := make([]byte, sealHeader, sealHeader+len(plain)+key.aead.Overhead())
	out[0] = sealVersion
	binary.BigEndian.PutUint32(out[1:5], id)
	_, _ = rand.Read(out[5:sealHeader]) // never fails (it crashes the program instead)
	return key.aead.Seal(out, out[5:sealHeader], plain, []byte(ad)), id
}

// open opens a value that seal sealed with the same ad.
func (k *keyring) open(sealed []byte, ad string) ([]byte, error) {
	return openSealed(sealed, ad, func(id uint32) *sealKey {
		k.mu.Lock()
		defer k.mu.Unlock()
		return k.keys[id]
	})
}

func openSealed(sealed []byte, ad string, key func(uint32) *sealKey) ([]byte, error) {
	if len(sealed) < sealHeader || sealed[0] != sealVersion {
		return nil, fmt.Errorf("%s is not a sealed value", ad)
	}
	id := binary.BigEndian.Uint32(sealed[1:5])
	sk := key(id)
	if sk == nil {
		return nil, fmt.Errorf("%s: sealing key %d is no longer held (its operation ended)", ad, id)
	}
	plain, err := sk.aead.Open(nil, sealed[5:sealHeader], sealed[sealHeader:], []byte(ad))
	if err != nil {
		return nil, fmt.Errorf("opening %s under key %d: %w", ad, id, err)
	}
	return plain, nil
}

// rotate makes next current, when next is on the file, and makes a new next for the filer to write. The
// caller holds mu.
func (k *keyring) rotate() {
	if k.next == 0 || !k.onFile[k.next] {
		return
	}
	k.cur, k.next, k.sealed = k.next, 0, 0
	if id, err := k.add(); err == nil {
		k.next = id
	} else {
		k.log.WithError(err).Error("making the next sealing key (the current one stays until one is made)")
	}
	k.signal()
}

// retire drops ids from the next rewrite of the file: no live value is sealed under them any more (the
// writer committed that); cur is never among them.
func (k *keyring) retire(ids []uint32) {
	k.mu.Lock()
	defer k.mu.Unlock()
	now := time.Now()
	for _, id := range ids {
		if _, ok := k.keys[id]; ok {
			k.retired[id] = now
		}
	}
	k.signal()
}

// current returns the current key's id, after rotating it when it is among ended (its values must move to
// another key). The caller is the writer.
func (k *keyring) current(ended []uint32) uint32 {
	k.mu.Lock()
	defer k.mu.Unlock()
	if slices.Contains(ended, k.cur) {
		k.rotate()
	}
	return k.cur
}

func (k *keyring) signal() {
	select {
	case k.wake <- struct{}{}:
	default:
	}
}

// filer rewrites the file whenever asked, until stop is closed; a failed rewrite is tried again a second later.
func (k *keyring) filer() {
	defer close(k.stopped)
	var retry <-chan time.Time
	for {
		select {
		case <-k.stop:
			return
		case <-k.wake:
		case <-retry:
		}
		retry = nil
		if err := k.rewrite(); err != nil {
			k.mu.Lock()
			if !k.failing {
				k.log.WithError(err).Error("rewriting the sealing keys file (ended operations' keys stay in it until a rewrite succeeds; retrying every second)")
			}
			k.failing = true
			k.mu.Unlock()
			retry = time.After(time.Second)
		}
	}
}

// rewrite writes every key not retired to the file, syncing the WAL first when that drops keys, and forgets
// keys retired more than keepRetired ago.
func (k *keyring) rewrite() error {
	k.mu.Lock()
	ids := make([]uint32, 0, len(k.keys))
	drops := false
	var b strings.Builder
	b.WriteString(keysMagic + "\n")
	for id := range k.keys {
		if _, gone := k.retired[id]; gone {
			drops = drops || k.onFile[id]
			continue
		}
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		fmt.Fprintf(&b, "%d %s\n", id, base64.StdEncoding.EncodeToString(k.keys[id].raw))
	}
	k.mu.Unlock()
	if drops {
		if err := syncIfExists(k.wal); err != nil {
			return fmt.Errorf("syncing the WAL before dropping keys: %w", err)
		}
	}
	if err := writeFileAtomic(k.path, []byte(b.String())); err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.onFile = map[uint32]bool{}
	for _, id := range ids {
		k.onFile[id] = true
	}
	for id, at := range k.retired {
		if time.Since(at) > keepRetired {
			delete(k.keys, id)
			delete(k.retired, id)
		}
	}
	if k.failing {
		k.log.Info("the sealing keys file is written again")
		k.failing = false
	}
	return nil
}

// close stops the filer and rewrites the file one last time (dropping what was retired); closing again does
// nothing.
func (k *keyring) close() error {
	select {
	case <-k.stop:
		return nil
	default:
	}
	close(k.stop)
	<-k.stopped
	return k.rewrite()
}

// writeFileAtomic replaces the file at path with data, readable by its owner only: a temporary file beside it,
// synced, renamed over it, and the directory synced.
func writeFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".new-*") // mode 0600
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := syncPath(filepath.Dir(path)); err != nil {
		return fmt.Errorf("syncing the directory of %s: %w", path, err)
	}
	return nil
}

func syncIfExists(path string) error {
	err := syncPath(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}
