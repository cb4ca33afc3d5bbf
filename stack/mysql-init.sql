-- docker-compose only: the reader's account (the local stack creates the same in stack/stack.py)
CREATE USER IF NOT EXISTS 'cdcflow_reader'@'%' IDENTIFIED BY 'cdcflow_reader';
GRANT SELECT, RELOAD, SHOW DATABASES, LOCK TABLES, REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'cdcflow_reader'@'%';
GRANT ALL PRIVILEGES ON cdcflow_demo.* TO 'cdcflow'@'%';
CREATE TABLE IF NOT EXISTS cdcflow_demo.teachers (
  id INT AUTO_INCREMENT PRIMARY KEY,
  name VARCHAR(100) NOT NULL,
  is_valid BOOLEAN NOT NULL DEFAULT TRUE,
  lessons INT NOT NULL DEFAULT 0,
  updated_at TIMESTAMP(3) DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3)
);
