-- While XA transactions are prepared but not yet committed or rolled back, the acknowledged
-- position in `checkpoint` is past their PREPARE groups, which hold their rows. This table
-- holds where reading must restart so that those rows are read again (one row per pipeline,
-- written in the same transaction as `checkpoint`, absent when nothing is prepared). A restart
-- hands on nothing up to the acknowledged position. A table of its own, not new columns: the
-- grants binlogd asks for (CREATE, SELECT, INSERT, UPDATE, DELETE) do not include ALTER.
CREATE TABLE IF NOT EXISTS `{schema}`.`checkpoint_restart` (
    pipeline      VARCHAR(190)    NOT NULL PRIMARY KEY,
    binlog_file   VARCHAR(255)    NOT NULL COMMENT 'before the oldest unresolved XA PREPARE',
    binlog_pos    BIGINT UNSIGNED NOT NULL,
    gtid_set      MEDIUMTEXT      NULL COMMENT 'GTID state at that point (same flavor as checkpoint.gtid_flavor)'
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
