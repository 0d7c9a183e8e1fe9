-- Access paths, join methods and join order as EXPLAIN shows them.
CREATE TABLE customer (id INTEGER NOT NULL PRIMARY KEY, name VARCHAR(20), region INTEGER);
CREATE INDEX customer_region ON customer (region);
CREATE TABLE orders (id BIGINT NOT NULL PRIMARY KEY, cid INTEGER NOT NULL, amount DECIMAL, placed TIMESTAMP);
CREATE INDEX orders_cid ON orders (cid, placed);
PARTITION TABLE orders ON COLUMN id;
CREATE TABLE audit (oid BIGINT, note VARCHAR(10));

EXPLAIN SELECT name FROM customer WHERE id = ?;
EXPLAIN SELECT name FROM customer WHERE region IN (1, 2, 3) AND name LIKE 'A%';
EXPLAIN SELECT id FROM orders WHERE cid = 7 AND placed >= '2026-01-01' AND placed < '2026-02-01';
EXPLAIN SELECT * FROM orders WHERE id = 42;
EXPLAIN SELECT c.name, SUM(o.amount) FROM customer c JOIN orders o ON o.cid = c.id WHERE c.region = 3 GROUP BY c.name ORDER BY 2 DESC LIMIT 10;
EXPLAIN SELECT o.id, a.note FROM orders o LEFT JOIN audit a ON a.oid = o.id;
EXPLAIN SELECT name FROM customer c WHERE EXISTS (SELECT 1 FROM orders o WHERE o.cid = c.id);
EXPLAIN SELECT region, COUNT(*) FROM customer GROUP BY region HAVING COUNT(*) > 1;
EXPLAIN UPDATE orders SET amount = amount * 2 WHERE id = ?;
EXPLAIN DELETE FROM customer WHERE region < 0;
EXPLAIN INSERT INTO orders VALUES (?, ?, ?, ?);
