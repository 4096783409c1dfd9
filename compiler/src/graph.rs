//! Pictures of a system: the LATT (the paper's Figure 2) and the boxes with their agents and
//! message edges (Figure 1), as text, DOT, SVG (laid out in-process by layout-rs, no graphviz
//! install needed) or a self-contained HTML page.

use std::collections::BTreeMap;
use std::fmt::Write;

use ovid::deployment::{BoxSpec, Runs};
use ovid::latt::{LattNode, NodeKind};
use ovid_stdlib::describe;

use crate::check::model::Model;
use crate::expand::Expanded;

/// The physical message edges: (sender, receiver) → messages sent.
pub fn edges(model: &Model, expanded: &Expanded) -> BTreeMap<(String, String), Vec<String>> {
    let mut out: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for agent in &expanded.agents {
        let table = expanded.routes.get(&agent.id);
        match &agent.runs {
            Runs::Agent { agent: ty } => {
                let Some(info) = model.agents.get(ty) else {
                    continue;
                };
                for (use_name, target) in &agent.bindings {
                    let physical = table
                        .and_then(|r| r.get(target))
                        .cloned()
                        .unwrap_or_else(|| target.clone());
                    let sent: Vec<String> = info
                        .uses
                        .get(use_name)
                        .map(|s| s.iter().cloned().collect())
                        .unwrap_or_default();
                    out.entry((agent.id.clone(), physical))
                        .or_default()
                        .extend(sent);
                }
            }
            // A proxy forwards whatever reaches it.
            Runs::Proxy { .. } => {
                for physical in table.into_iter().flat_map(|t| t.values()) {
                    out.entry((agent.id.clone(), physical.clone())).or_default();
                }
            }
        }
    }
    out
}

fn node_label(n: &LattNode) -> String {
    match &n.kind {
        NodeKind::System => format!("system {}", n.id),
        NodeKind::Agent { agent } => format!("{} ({agent})", n.id),
        NodeKind::Transformed {
            agent, transform, ..
        } => format!("{} ({agent}) |> {}", n.id, describe(transform)),
        NodeKind::Channel { transform } => {
            format!("{} (channel) |> {}", n.id, describe(transform))
        }
        NodeKind::Proxy { proxy } => format!("{} ({proxy})", n.id),
    }
}

/// The LATT, boxes and edges as indented text.
pub fn text(model: &Model, expanded: &Expanded, boxes: &[BoxSpec]) -> String {
    fn walk(n: &LattNode, prefix: &str, last: bool, root: bool, out: &mut String) {
        if root {
            let _ = writeln!(out, "{}", node_label(n));
        } else {
            let _ = writeln!(
                out,
                "{prefix}{}{}",
                if last { "└── " } else { "├── " },
                node_label(n)
            );
        }
        let child_prefix = if root {
            String::new()
        } else {
            format!("{prefix}{}", if last { "    " } else { "│   " })
        };
        for (i, c) in n.children.iter().enumerate() {
            walk(c, &child_prefix, i + 1 == n.children.len(), false, out);
        }
    }
    let mut out = String::from("LATT\n");
    walk(&expanded.latt, "", true, true, &mut out);
    out.push_str("\nBoxes\n");
    for b in boxes {
        let addr = b.address.as_deref().unwrap_or("address chosen at start");
        let _ = writeln!(out, "  {} ({addr}): {}", b.name, b.agents.join(", "));
    }
    // `controller |> replicate(n)`: one box per replica, which `ovidc run` starts first.
    let replicas = model
        .system
        .as_ref()
        .and_then(|s| s.controller_replicas)
        .unwrap_or(0);
    for i in 0..replicas as usize {
        let _ = writeln!(
            out,
            "  {} (address chosen at start): controller (replica {i} of {replicas})",
            ovid::controller_group::replica_box(i)
        );
    }
    out.push_str("\nMessages\n");
    for ((from, to), msgs) in edges(model, expanded) {
        let what = if msgs.is_empty() {
            "(forwarded)".to_string()
        } else {
            msgs.join(", ")
        };
        let _ = writeln!(out, "  {from} -> {to}: {what}");
    }
    out
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The LATT as a DOT digraph (parent → child).
pub fn latt_dot(expanded: &Expanded) -> String {
    fn walk(n: &LattNode, out: &mut String) {
        let _ = writeln!(out, "  {} [label={}];", quote(&n.id), quote(&node_label(n)));
        for c in &n.children {
            let _ = writeln!(out, "  {} -> {};", quote(&n.id), quote(&c.id));
            walk(c, out);
        }
    }
    let mut out = String::from("digraph latt {\n");
    walk(&expanded.latt, &mut out);
    out.push_str("}\n");
    out
}

/// The physical agents, labelled with their box, and their message edges as a DOT digraph.
pub fn boxes_dot(model: &Model, expanded: &Expanded, boxes: &[BoxSpec]) -> String {
    let mut out = String::from("digraph boxes {\n");
    for b in boxes {
        for a in &b.agents {
            let _ = writeln!(
                out,
                "  {} [label={}];",
                quote(a),
                quote(&format!("{a} @ {}", b.name))
            );
        }
    }
    for ((from, to), msgs) in edges(model, expanded) {
        let _ = writeln!(
            out,
            "  {} -> {} [label={}];",
            quote(&from),
            quote(&to),
            quote(&msgs.join(", "))
        );
    }
    out.push_str("}\n");
    out
}

/// Both graphs in one DOT file.
pub fn dot(model: &Model, expanded: &Expanded, boxes: &[BoxSpec]) -> String {
    format!(
        "{}\n{}",
        latt_dot(expanded),
        boxes_dot(model, expanded, boxes)
    )
}

/// Lays out one DOT digraph as SVG.
pub fn svg_of(dot: &str) -> Result<String, String> {
    use layout::backends::svg::SVGWriter;
    use layout::gv::{DotParser, GraphBuilder};
    let graph = DotParser::new(dot)
        .process()
        .map_err(|e| format!("cannot lay out the graph: {e}"))?;
    let mut builder = GraphBuilder::new();
    builder.visit_graph(&graph);
    let mut visual = builder.get();
    if visual.num_nodes() == 0 {
        return Ok(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"1\" height=\"1\"></svg>".to_string(),
        );
    }
    let mut svg = SVGWriter::new();
    visual.do_it(false, false, false, &mut svg);
    Ok(svg.finalize())
}

/// The LATT and the box graph side by side as SVG.
pub fn svg(
    model: &Model,
    expanded: &Expanded,
    boxes: &[BoxSpec],
) -> Result<(String, String), String> {
    Ok((
        svg_of(&latt_dot(expanded))?,
        svg_of(&boxes_dot(model, expanded, boxes))?,
    ))
}

/// A self-contained HTML page with both pictures and the text form.
pub fn html(model: &Model, expanded: &Expanded, boxes: &[BoxSpec]) -> Result<String, String> {
    let (latt, graph) = svg(model, expanded, boxes)?;
    let text = text(model, expanded, boxes)
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    Ok(format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{name}</title>\
         <style>body{{font-family:sans-serif;margin:2em}} pre{{background:#f6f6f6;padding:1em}}</style></head>\n\
         <body><h1>System {name}</h1>\n<h2>Logical Agent Transformation Tree</h2>\n{latt}\n\
         <h2>Boxes, agents and messages</h2>\n{graph}\n<h2>As text</h2>\n<pre>{text}</pre>\n</body></html>\n",
        name = expanded.system
    ))
}
