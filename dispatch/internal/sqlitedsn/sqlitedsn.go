// Package sqlitedsn holds the connection settings of the SQLite store driver (dispatch/store/sqlite), in one
// place that the driver and the dispatch server's benchmark share, so the benchmark's raw SQLite baseline
// runs with exactly the driver's settings. It is internal: the settings are no part of any package's API.
package sqlitedsn

// BusyTimeout is how long, in milliseconds, a connection waits for a lock that another one holds.
const BusyTimeout = "10000"

// Pragmas are applied to every connection: WAL so readers never block the writer, synchronous=NORMAL (in WAL
// mode a commit survives a process crash; a power loss may lose the last commits but never corrupts the file),
// a busy timeout for the rare cross-process lock, and foreign keys on.
const pragmas = "_pragma=busy_timeout(" + BusyTimeout + ")&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)" +
	"&_pragma=foreign_keys(1)&_pragma=temp_store(MEMORY)"

// The writer's own settings. First auto_vacuum=INCREMENTAL, so freed pages can be given back to the file
// system: it must come before journal_mode(WAL), which writes a new file's first page, after which it only
// changes a database through a VACUUM (the store runs that once on an older file). Last secure_delete, so the
// bytes of a deleted or overwritten value (a sensitive value erased when its operation ends) and every freed
// page are zeroed instead of left in the file, and the IMMEDIATE transaction mode.
const (
	writerFirst = "_pragma=auto_vacuum(INCREMENTAL)&"
	writerLast  = "&_pragma=secure_delete(1)&_txlock=immediate"
)

// DSN returns the data source name the driver opens path with; writer selects the writer's own settings (for
// the one writer connection), otherwise the connection is read-only.
func DSN(path string, writer bool) string {
	if writer {
		return path + "?" + writerFirst + pragmas + writerLast
	}
	return path + "?" + pragmas + "&_pragma=query_only(1)"
}

// Backup returns the data source name a backup reads path with, beside a server that may be using it: the busy
// timeout only. It changes nothing in the file (no journal mode or auto-vacuum), and it is not query_only,
// which refuses VACUUM INTO although that writes only the copy.
func Backup(path string) string {
	return path + "?_pragma=busy_timeout(" + BusyTimeout + ")"
}
