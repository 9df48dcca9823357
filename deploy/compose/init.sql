-- The user binlogd connects as, with the minimal grants, and a demo table.
CREATE USER 'binlogd'@'%' IDENTIFIED BY 'binlogd-demo-password';
GRANT REPLICATION SLAVE, REPLICATION CLIENT, SELECT ON *.* TO 'binlogd'@'%';
CREATE DATABASE binlogd;
GRANT CREATE, SELECT, INSERT, UPDATE, DELETE ON binlogd.* TO 'binlogd'@'%';
CREATE DATABASE shop;
CREATE TABLE shop.users (id INT PRIMARY KEY, email VARCHAR(100), balance DECIMAL(10,2));
