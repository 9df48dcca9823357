-- Snapshots (`[snapshot]`, `binlogd snapshot …`). Tables of their own, not new columns: the
-- grants binlogd asks for (CREATE, SELECT, INSERT, UPDATE, DELETE) do not include ALTER.
--
-- `snapshot_progress`: the progress of the pipeline's snapshot (tables, last key emitted per
-- table, rows, done), written in the same transaction as `checkpoint`, so the stored position
-- and the stored progress always belong together: a restart continues the stream from the
-- position and each table from the chunk after its stored last key.
CREATE TABLE IF NOT EXISTS `{schema}`.`snapshot_progress` (
    pipeline    VARCHAR(190) NOT NULL PRIMARY KEY,
    progress    MEDIUMTEXT   NOT NULL COMMENT 'JSON, see src/snapshot/progress.rs',
    updated_at  TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- `snapshot_request`: `binlogd snapshot start` / `cancel` write a row here; whichever daemon
-- holds the pipeline lock picks it up (within a second), so a request reaches the active
-- daemon of an HA pair and survives restarts.
CREATE TABLE IF NOT EXISTS `{schema}`.`snapshot_request` (
    id          BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    pipeline    VARCHAR(190)    NOT NULL,
    kind        VARCHAR(16)     NOT NULL COMMENT 'start | cancel',
    tables      TEXT            NULL COMMENT 'JSON array of "db.table" (start)',
    where_sql   TEXT            NULL COMMENT 'SQL condition limiting the rows read (start)',
    state       VARCHAR(16)     NOT NULL DEFAULT 'pending' COMMENT 'pending | accepted | rejected',
    message     TEXT            NULL,
    created_at  TIMESTAMP(3)    NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    updated_at  TIMESTAMP(3)    NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
    KEY pending (pipeline, state)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
