// Package sqlitedsn holds the connection settings of the SQLite store driver (dispatch/store/sqlite), in one
// place that the driver and the dispatch server's benchmark share, so the benchmark's raw SQLite baseline
// runs with exactly the driver's settings. It is internal: the settings are no part of any package's API.
package sqlitedsn

// Pragmas are applied to every connection: WAL so readers never block the writer, synchronous=NORMAL (in WAL
// mode a commit survives a process crash; a power loss may lose the last commits but never corrupts the file),
// a busy timeout for the rare cross-process lock, and foreign keys on.
const pragmas = "_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)" +
	"&_pragma=foreign_keys(1)&_pragma=temp_store(MEMORY)"

// DSN returns the data source name the driver opens path with; writer selects the IMMEDIATE transaction mode
// (for the one writer connection), otherwise the connection is read-only.
func DSN(path string, writer bool) string {
	dsn := path + "?" + pragmas
	if writer {
		dsn += "&_txlock=immediate"
	} else {
		dsn += "&_pragma=query_only(1)"
	}
	return dsn
}
