-- binlogd checkpoint table: one row per pipeline, written only at transaction ends that every
-- sink has acknowledged. `{schema}` is replaced by [checkpoint] schema (default `binlogd`).
CREATE TABLE IF NOT EXISTS `{schema}`.`checkpoint` (
    pipeline      VARCHAR(190)    NOT NULL PRIMARY KEY,
    binlog_file   VARCHAR(255)    NOT NULL,
    binlog_pos    BIGINT UNSIGNED NOT NULL,
    gtid_set      MEDIUMTEXT      NULL COMMENT 'MySQL uuid:interval set or MariaDB domain-server-seq list',
    gtid_flavor   VARCHAR(16)     NULL COMMENT 'mysql | mariadb',
    server_id     INT UNSIGNED    NOT NULL COMMENT 'server_id of the source',
    server_uuid   VARCHAR(64)     NULL COMMENT 'server_uuid of the source (MySQL)',
    event_ts_ms   BIGINT UNSIGNED NOT NULL COMMENT 'event time of the last acknowledged transaction',
    updated_at    TIMESTAMP(3)    NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
