// The key-value store the replication tests run (messages, agent, workload, reference), shared by
// replicate.rs and primary_backup.rs through `include!`.

// ---- the agent under test -------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Message)]
struct Put {
    key: String,
    value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Message)]
struct PutOk {
    key: String,
    previous: Option<String>,
    version: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Message)]
struct Get {
    key: String,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Message)]
struct GetOk {
    key: String,
    value: Option<String>,
    version: u64,
}

/// A key-value store whose replies depend on the order of every operation (`version`).
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
struct Store {
    map: BTreeMap<String, String>,
    version: u64,
}

#[ovid::agent]
impl Store {
    fn on_put(&mut self, _ctx: &mut Context, put: Put) -> PutOk {
        self.version += 1;
        let previous = self.map.insert(put.key.clone(), put.value);
        PutOk { key: put.key, previous, version: self.version }
    }

    fn on_get(&mut self, _ctx: &mut Context, get: Get) -> GetOk {
        GetOk { value: self.map.get(&get.key).cloned(), key: get.key, version: self.version }
    }
}

// ---- workload -------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    Put(String, String),
    Get(String),
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Rep {
    Put(PutOk),
    Get(GetOk),
}

/// A repeatable mix of puts and gets over a few keys.
fn workload(seed: u64, len: usize) -> Vec<Op> {
    let mut x = seed | 1;
    (0..len)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let key = format!("k{}", x % 8);
            if (x >> 8) % 10 < 6 { Op::Put(key, format!("v{i}")) } else { Op::Get(key) }
        })
        .collect()
}

const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends a window of operations without waiting, then takes their replies (sorted: replies to
/// one window may come back in any order, but `version` pins each one down).
async fn window(client: &mut Endpoint, ops: &[Op]) -> Vec<Rep> {
    for op in ops {
        match op {
            Op::Put(k, v) => client.send("KVS", Put { key: k.clone(), value: v.clone() }).await.unwrap(),
            Op::Get(k) => client.send("KVS", Get { key: k.clone() }).await.unwrap(),
        }
    }
    let mut reps = Vec::new();
    for _ in ops {
        let env = timeout(REPLY_TIMEOUT, client.recv()).await.expect("a reply in time").expect("endpoint open");
        reps.push(match env.payload.name() {
            "PutOk" => Rep::Put(env.payload.decode().unwrap()),
            "GetOk" => Rep::Get(env.payload.decode().unwrap()),
            other => panic!("unexpected reply {other}"),
        });
    }
    reps.sort();
    reps
}

async fn put(client: &mut Endpoint, key: &str, value: &str) -> PutOk {
    client.send("KVS", Put { key: key.into(), value: value.into() }).await.unwrap();
    let env = timeout(REPLY_TIMEOUT, client.recv()).await.expect("a reply in time").expect("endpoint open");
    env.payload.decode().unwrap()
}

async fn get(client: &mut Endpoint, key: &str) -> GetOk {
    client.send("KVS", Get { key: key.into() }).await.unwrap();
    let env = timeout(REPLY_TIMEOUT, client.recv()).await.expect("a reply in time").expect("endpoint open");
    env.payload.decode().unwrap()
}

/// The untransformed store, for reference.
async fn unreplicated() -> BoxHandle {
    let placement = Placement::new().agent("KVS", "solo", "Store");
    let b = BoxBuilder::new("solo").kind("Store", |_| Store::default()).with_controller(Controller::new(placement)).start().await.unwrap();
    b.ready().await.unwrap();
    b
}
