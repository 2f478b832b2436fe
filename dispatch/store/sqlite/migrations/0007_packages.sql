-- Packages: the metadata of content the server keeps in files beside the database, named by its SHA-256.
-- NAME@VERSION names one package; several may share one content.
CREATE TABLE packages (
    name       TEXT NOT NULL,
    version    TEXT NOT NULL,
    sha256     TEXT NOT NULL,   -- hex; the file's name in the server's package directory
    size       INTEGER NOT NULL,
    file_name  TEXT NOT NULL,   -- the pushed file's base name: how the script pod places it
    created_at INTEGER NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE INDEX packages_sha256 ON packages (sha256);

-- The packages an operation references, resolved at submit. The foreign keys make a referenced package
-- undeletable while the operation exists, and go with the operation when retention deletes it.
CREATE TABLE operation_packages (
    op_seq  INTEGER NOT NULL REFERENCES operations (seq) ON DELETE CASCADE,
    idx     INTEGER NOT NULL,
    name    TEXT NOT NULL,
    version TEXT NOT NULL,
    PRIMARY KEY (op_seq, idx),
    FOREIGN KEY (name, version) REFERENCES packages (name, version)
);
CREATE INDEX operation_packages_package ON operation_packages (name, version);
