// The store, the system and the run that the simulator tests of replicate.rs and
// primary_backup.rs share, through `include!`. The including file names the transformation:
// `transform` (its module), TRANSFORM, PROXY, COPY, BOX and NAME.

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
struct Put {
    key: String,
    value: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
struct PutOk {
    key: String,
    previous: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
struct Get {
    key: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
struct GetOk {
    key: String,
    value: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct KeyValueStore {
    store: BTreeMap<String, String>,
}

#[ovid::agent]
impl KeyValueStore {
    fn on_put(&mut self, _ctx: &mut Context, put: Put) -> PutOk {
        let previous = self.store.insert(put.key.clone(), put.value);
        PutOk { key: put.key, previous }
    }

    fn on_get(&mut self, _ctx: &mut Context, get: Get) -> GetOk {
        GetOk { value: self.store.get(&get.key).cloned(), key: get.key }
    }
}

/// Requests over three keys, so that operations collide.
fn request(rng: &mut Rng) -> Payload {
    let key = format!("k{}", rng.below(3));
    if rng.chance(50) { Payload::new(Put { key, value: format!("v{}", rng.below(10)) }) } else { Payload::new(Get { key }) }
}

fn kinds(b: BoxBuilder) -> BoxBuilder {
    let hooks: Arc<dyn Hooks> = Arc::new(NoHooks);
    let mut b = b.kind("KeyValueStore", |_| KeyValueStore::default());
    for (kind, factory) in transform::proxies(&hooks) {
        b = b.kind_boxed(kind, factory);
    }
    b
}

impl ovid_stdlib::refinement::State for KeyValueStore {
    fn into_parts(self) -> Result<ovid_stdlib::refinement::Parts, Error> {
        let mut parts = ovid_stdlib::refinement::Parts::new(Vec::new());
        parts.put_map("store", self.store)?;
        Ok(parts)
    }

    fn from_parts(mut parts: ovid_stdlib::refinement::Parts) -> Result<Self, Error> {
        Ok(KeyValueStore { store: parts.take_map("store")? })
    }
}

fn targets() -> Vec<Target> {
    let refine = ovid_stdlib::refinement::refine_snapshot::<KeyValueStore>;
    vec![Target { id: "KVS".into(), spec_kind: "KeyValueStore".into(), requests: vec!["Put".into(), "Get".into()], request, refine }]
}

/// `client -> KVS |> TRANSFORM(n)`: the client and its ingress proxy in box `front`, copy i and
/// its proxy in box `{BOX}{i}`; the configurations are the expansion's own.
fn system(n: i64) -> System {
    let args: Args = Args::from([("n".to_string(), Value::Int(n))]);
    let senders = vec!["client".to_string()];
    let req = Request { id: "KVS", senders: &senders, args: &args };
    let transformation = ovid_stdlib::lookup(TRANSFORM).expect("a transformation of the registry");
    let e = transformation.expand(&req);
    let faults = transformation.faults(&req, &e);
    let mut agents = vec![serde_json::json!({"id": "client", "box": "front", "runs": {"kind": "agent", "agent": "Client"}, "bindings": {"kvs": "KVS"}})];
    let mut children = Vec::new();
    let mut boxes: BTreeMap<String, Vec<String>> = BTreeMap::from([("front".to_string(), vec!["client".to_string()])]);
    for child in &e.children {
        let last = child.id.rsplit('/').next().unwrap();
        let in_box = match last.strip_prefix(PROXY).or_else(|| last.strip_prefix(COPY)) {
            Some(i) => format!("{BOX}{i}"),
            None => "front".to_string(),
        };
        let (runs, node) = match &child.role {
            Role::Proxy { proxy, config } => (serde_json::json!({"kind": "proxy", "proxy": proxy, "config": config}), serde_json::json!({"id": child.id, "kind": "proxy", "proxy": proxy})),
            Role::Copy => (serde_json::json!({"kind": "agent", "agent": "KeyValueStore"}), serde_json::json!({"id": child.id, "kind": "agent", "agent": "KeyValueStore"})),
        };
        agents.push(serde_json::json!({"id": child.id, "box": in_box, "runs": runs}));
        boxes.entry(in_box).or_default().push(child.id.clone());
        children.push(node);
    }
    let d = serde_json::json!({
        "system": "Store",
        "boxes": boxes.iter().map(|(n, a)| serde_json::json!({"name": n, "address": null, "agents": a})).collect::<Vec<_>>(),
        "agents": agents,
        "routes": {"client": {"KVS": e.entry["client"]}},
        "latt": {"id": "Store", "kind": "system", "children": [
            {"id": "KVS", "kind": "transformed", "agent": "KeyValueStore", "transform": {"name": TRANSFORM, "args": args}, "faults": faults, "children": children},
            {"id": "client", "kind": "agent", "agent": "Client"},
        ]},
        "clients": ["client"],
    });
    System { deployment: Box::leak(d.to_string().into_boxed_str()), kinds, targets }
}

fn run(n: i64, options: Options) {
    let r = test_system(&system(n), &options).expect("the simulator runs");
    let text = r.render(NAME);
    println!("{text}");
    assert!(r.passed(), "{text}");
}
