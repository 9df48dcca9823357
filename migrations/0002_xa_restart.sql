-- While XA transactions are prepared but not yet committed or rolled back, the acknowledged
-- position (binlog_file/binlog_pos/gtid_set) is past their PREPARE groups, which hold their
-- rows; restart_* is where reading must restart so those rows are read again. NULL: restart at
-- the acknowledged position. A restart hands on nothing up to the acknowledged position.
ALTER TABLE `{schema}`.`checkpoint`
    ADD COLUMN restart_file     VARCHAR(255)    NULL COMMENT 'oldest unresolved XA PREPARE: restart reading here',
    ADD COLUMN restart_pos      BIGINT UNSIGNED NULL,
    ADD COLUMN restart_gtid_set MEDIUMTEXT      NULL;
