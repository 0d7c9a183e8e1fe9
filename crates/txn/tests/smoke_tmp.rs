use joule_common::Value;
use joule_txn::{Host, HostConfig};

#[test]
fn smoke() {
    let host = Host::start(HostConfig { sites_per_host: 2, ..Default::default() }).unwrap();
    let mut c = host.client();
    let r = c.adhoc("CREATE TABLE acct (id BIGINT NOT NULL PRIMARY KEY, bal BIGINT NOT NULL); PARTITION TABLE acct ON COLUMN id; CREATE TABLE cfg (k INT PRIMARY KEY, v VARCHAR(10))", vec![]);
    println!("{r:?}");
    assert!(r.is_success());
    for i in 0..10 {
        let r = c.call("ACCT.insert", vec![Value::Integer(i), Value::Integer(100)]);
        assert!(r.is_success(), "{r:?}");
    }
    let r = c.adhoc("SELECT COUNT(*), SUM(bal) FROM acct", vec![]);
    println!("{r:?}");
    let r = c.adhoc("SELECT * FROM acct ORDER BY id DESC LIMIT 3", vec![]);
    println!("{r:?}");
    let r = c.adhoc("INSERT INTO cfg VALUES (1, 'a')", vec![]);
    println!("{r:?}");
    let r = c.adhoc("SELECT * FROM cfg", vec![]);
    println!("{r:?}");
    let r = c.adhoc("UPDATE acct SET bal = bal + 1", vec![]);
    println!("{r:?}");
    let r = c.call("@ValidatePartitioning", vec![]);
    println!("{r:?}");
    let r = c.adhoc("CREATE PROCEDURE get PARTITION ON TABLE acct COLUMN id AS SELECT bal FROM acct WHERE id = ?", vec![]);
    println!("{r:?}");
    let r = c.call("get", vec![Value::Integer(3)]);
    println!("{r:?}");
    let r = c.adhoc("INSERT INTO acct SELECT id + 100, bal FROM acct", vec![]);
    println!("{r:?}");
    let r = c.call("@ValidatePartitioning", vec![]);
    println!("{r:?}");
}
