//! An agent state as the refinement mappings see it ([`Parts`]: its keyed maps entry by entry,
//! the rest as one encoding), and what a transformation's mapping is given ([`Merge`]). Plain
//! data at the bottom of the crate: transformations and the LATT walk of `refinement` use it.

use std::collections::BTreeMap;

use ovid::Error;
use ovid::agent::{serde_restore, serde_snapshot};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// An agent state taken apart for the refinement mappings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parts {
    /// State partitioned by a key: field → (key's encoding → value's encoding).
    pub keyed: BTreeMap<String, BTreeMap<Vec<u8>, Vec<u8>>>,
    /// Everything else, as one encoding (the state with its keyed maps emptied).
    pub rest: Vec<u8>,
}

impl Parts {
    /// Parts whose unkeyed state is `rest`.
    pub fn new(rest: Vec<u8>) -> Self {
        Parts {
            keyed: BTreeMap::new(),
            rest,
        }
    }

    /// Adds the keyed map `field`, encoding each entry.
    pub fn put_map<K: Serialize, V: Serialize>(
        &mut self,
        field: &str,
        map: BTreeMap<K, V>,
    ) -> Result<(), Error> {
        let mut entries = BTreeMap::new();
        for (k, v) in map {
            entries.insert(serde_snapshot(&k)?, serde_snapshot(&v)?);
        }
        self.keyed.insert(field.to_string(), entries);
        Ok(())
    }

    /// Takes the keyed map `field` out, decoding each entry (empty if absent).
    pub fn take_map<K: DeserializeOwned + Ord, V: DeserializeOwned>(
        &mut self,
        field: &str,
    ) -> Result<BTreeMap<K, V>, Error> {
        let mut map = BTreeMap::new();
        for (k, v) in self.keyed.remove(field).unwrap_or_default() {
            map.insert(serde_restore(&k)?, serde_restore(&v)?);
        }
        Ok(map)
    }
}

/// An agent state type the refinement mappings can take apart and put back together.
pub trait State: Sized {
    /// Takes the state apart.
    fn into_parts(self) -> Result<Parts, Error>;
    /// Puts a state back together.
    fn from_parts(parts: Parts) -> Result<Self, Error>;
}

/// One child of a transformed node that runs (or combines) the agent's code.
#[derive(Debug)]
pub struct Copy {
    /// Its identifier.
    pub id: String,
    /// Its state; `Err(Error::DeadAgent)` if it (or all of it) is down.
    pub state: Result<Parts, Error>,
}

/// What a transformation's physical → virtual mapping is given.
#[derive(Debug)]
pub struct Merge<'a> {
    /// The transformed node's identifier.
    pub id: &'a str,
    /// Its transformation's arguments.
    pub args: &'a ovid::latt::Args,
    /// Its copies, in expansion order.
    pub copies: Vec<Copy>,
    /// The snapshot of every physical agent (proxies included) that is up, by identifier.
    pub snapshots: &'a BTreeMap<String, Vec<u8>>,
}

/// The common state of copies that must agree (replicas at quiescence, stateless workers, the
/// single copy behind a channel transformation); copies that are down are left out.
pub fn agree(id: &str, copies: Vec<Copy>) -> Result<Parts, Error> {
    let mut live = Vec::new();
    for copy in copies {
        match copy.state {
            Ok(state) => live.push((copy.id, state)),
            Err(Error::DeadAgent(_)) => {}
            Err(e) => return Err(e),
        }
    }
    let mut live = live.into_iter();
    let (first_id, first) = live
        .next()
        .ok_or_else(|| Error::DeadAgent(id.to_string()))?;
    for (other_id, other) in live {
        if other != first {
            return Err(Error::Invalid(format!(
                "the copies of `{id}` disagree: `{first_id}` and `{other_id}`"
            )));
        }
    }
    Ok(first)
}
