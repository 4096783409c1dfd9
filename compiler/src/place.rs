//! Placement: which box runs each physical agent, and at what address each box listens.

use ovid::deployment::BoxSpec;

use crate::check::model::BoxInfo;
use crate::expand::Expanded;

/// The name of the box that runs agents no declared box claims.
pub const DEFAULT_BOX: &str = "main";

/// Places every physical agent into the first declared box with a pattern matching its
/// identifier (`*` matches any run of characters), or else into the default box `main`.
/// Declared boxes that end up empty are kept: an operator may want to start them anyway.
pub fn place(expanded: &Expanded, declared: &[BoxInfo]) -> Vec<BoxSpec> {
    let mut boxes: Vec<BoxSpec> = declared
        .iter()
        .map(|b| BoxSpec {
            name: b.name.clone(),
            address: b.address.clone(),
            agents: Vec::new(),
        })
        .collect();
    let mut default = BoxSpec {
        name: DEFAULT_BOX.to_string(),
        address: None,
        agents: Vec::new(),
    };
    for agent in &expanded.agents {
        let home = declared
            .iter()
            .position(|b| b.patterns.iter().any(|p| matches(p, &agent.id)));
        match home {
            Some(i) => boxes[i].agents.push(agent.id.clone()),
            None => default.agents.push(agent.id.clone()),
        }
    }
    if !default.agents.is_empty() && !boxes.iter().any(|b| b.name == DEFAULT_BOX) {
        boxes.push(default);
    } else if let Some(b) = boxes.iter_mut().find(|b| b.name == DEFAULT_BOX) {
        b.agents.extend(default.agents);
    }
    boxes
}

/// Whether an identifier pattern (`*` = any run of characters) matches an identifier.
pub fn matches(pattern: &str, id: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == id;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !id.starts_with(first)
        || !id[first.len()..].ends_with(last)
        || id.len() < first.len() + last.len()
    {
        return false;
    }
    let mut rest = &id[first.len()..id.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(i) => rest = &rest[i + middle.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn patterns_match_identifiers() {
        assert!(matches("KVS/Shard*", "KVS/Shard1"));
        assert!(matches("KVS/Part*", "KVS/PartIngressProxy0"));
        assert!(matches("client*", "client[2]"));
        assert!(matches("*Proxy*", "KVS/PartEgressProxy1"));
        assert!(matches("KVS", "KVS"));
        assert!(!matches("KVS", "KVS/Shard0"));
        assert!(!matches("a*b*c", "acb"));
        assert!(matches("a*a", "aa"));
        assert!(!matches("a*a", "a"));
    }
}
