//! Change control, pure: which of an App's Targets freezes and sync windows hold at a time
//! (see `docs/change-control.md`). The rollout obeys the [`Holds`] this returns
//! ([`super::rollout::decide_held`]).
//!
//! - A freeze holds the Apps it names (by name or Project; naming none: every App) on the
//!   clusters its selector matches (none: every cluster) until it ends.
//! - A `deny` window of the App or its Project holds the clusters it applies to while open.
//! - When any `allow` window applies to a cluster, that cluster is held while none of them is
//!   open, until the next one opens. Deny wins over allow.
//! - A freeze with `selfHeal: false` (`--no-self-heal`) and a window with `selfHeal: false`
//!   also suspend the self-heal of what they hold ([`Hold::suspends_self_heal`]): a deny window
//!   while it is open, an allow window while the cluster is outside every allow window. The
//!   App is decided again at every edge that may change that.

use super::freeze::Freeze;
use super::hold::{Hold, HoldKind, Holds};
use super::placement::{ClusterLabels, selector_matches};
use super::window::{CompiledWindow, WindowState, utc_text};
use crate::resources::{App, LabelSelector, Project, SyncWindow, SyncWindowKind};

#[cfg(test)]
mod tests;

/// One window of the App or its Project, compiled, with where it came from.
struct Window<'a> {
    compiled: CompiledWindow,
    clusters: Option<&'a LabelSelector>,
    /// `App checkout` or `Project shop`.
    owner: String,
    /// The window's `selfHeal`.
    self_heal: bool,
}

/// What freezes and the sync windows of `app` and its `project` hold of `app`'s Targets on
/// `clusters` (its plan's) at `now`. A window that does not compile (stored before a check
/// existed) holds nothing and is left out.
pub fn change_control_holds(
    app: &App,
    project: Option<&Project>,
    freezes: &[Freeze],
    clusters: &[ClusterLabels<'_>],
    now: i64,
) -> Holds {
    let mut holds = Holds::none();
    let project_name = app.spec.project_name();
    for f in freezes {
        if !f.active(now) || !f.covers_app(&app.metadata.name, project_name) {
            continue;
        }
        let hold = Hold {
            kind: HoldKind::Freeze,
            reason: f.hold_reason(),
            until: Some(f.until),
            suspends_self_heal: f.self_heal_text(),
        };
        if !f.self_heal {
            holds.self_heal_changes_at(f.until);
        }
        if f.cluster_selector.is_none() {
            holds.hold_everywhere(hold);
        } else {
            for c in clusters.iter().filter(|c| f.covers_cluster(c.labels)) {
                holds.hold(c.name, hold.clone());
            }
        }
    }
    let mut windows = compiled(
        &app.spec.sync_windows,
        &format!("App {}", app.metadata.name),
    );
    if let Some(p) = project {
        windows.extend(compiled(
            &p.spec.sync_windows,
            &format!("Project {}", p.metadata.name),
        ));
    }
    if windows.is_empty() {
        return holds;
    }
    let states: Vec<WindowState> = windows.iter().map(|w| w.compiled.state(now)).collect();
    if windows.iter().any(|w| !w.self_heal) {
        // Any window's edge may change what suspends self-heal (a deny window that does
        // opening, or one that does not outlasting it; an allow window opening).
        let edge = states
            .iter()
            .filter_map(|s| match *s {
                WindowState::Open { until } => Some(until),
                WindowState::Closed { opens } => opens,
            })
            .min();
        if let Some(at) = edge {
            holds.self_heal_changes_at(at);
        }
    }
    if windows.iter().all(|w| w.clusters.is_none()) {
        let all: Vec<usize> = (0..windows.len()).collect();
        if let Some(hold) = window_hold(&windows, &states, &all) {
            holds.hold_everywhere(hold);
        }
        return holds;
    }
    for c in clusters {
        let applying: Vec<usize> = (0..windows.len())
            .filter(|&i| {
                windows[i]
                    .clusters
                    .is_none_or(|s| selector_matches(s, c.labels))
            })
            .collect();
        if let Some(hold) = window_hold(&windows, &states, &applying) {
            holds.hold(c.name, hold);
        }
    }
    holds
}

fn compiled<'a>(windows: &'a [SyncWindow], owner: &str) -> Vec<Window<'a>> {
    windows
        .iter()
        .filter_map(|w| {
            CompiledWindow::compile(w).ok().map(|compiled| Window {
                compiled,
                clusters: w.cluster_selector.as_ref(),
                owner: owner.to_owned(),
                self_heal: w.self_heal,
            })
        })
        .collect()
}

/// The hold the windows at `applying` make, if any: an open deny window first (the one that
/// ends last: that is when the cluster is free of deny windows, as far as one can see now),
/// else every allow window closed (until the first opens). It suspends self-heal when one of
/// the windows that make it (an open deny window; an allow window, when outside every allow
/// window) says `selfHeal: false`.
fn window_hold(windows: &[Window<'_>], states: &[WindowState], applying: &[usize]) -> Option<Hold> {
    let open_denies: Vec<(i64, usize)> = applying
        .iter()
        .filter(|&&i| windows[i].compiled.kind == SyncWindowKind::Deny)
        .filter_map(|&i| match states[i] {
            WindowState::Open { until } => Some((until, i)),
            WindowState::Closed { .. } => None,
        })
        .collect();
    if let Some(&(until, i)) = open_denies.iter().max() {
        let w = &windows[i];
        let suspends_self_heal = open_denies
            .iter()
            .map(|&(_, i)| &windows[i])
            .find(|w| !w.self_heal)
            .map(|w| format!("deny window {} of {}", w.compiled.label, w.owner));
        return Some(Hold {
            kind: HoldKind::Window,
            reason: format!(
                "deny window {} of {} until {}",
                w.compiled.label,
                w.owner,
                utc_text(until)
            ),
            until: Some(until),
            suspends_self_heal,
        });
    }
    let allows: Vec<usize> = applying
        .iter()
        .copied()
        .filter(|&i| windows[i].compiled.kind == SyncWindowKind::Allow)
        .collect();
    if allows.is_empty()
        || allows
            .iter()
            .any(|&i| matches!(states[i], WindowState::Open { .. }))
    {
        return None;
    }
    let suspends_self_heal = allows
        .iter()
        .map(|&i| &windows[i])
        .find(|w| !w.self_heal)
        .map(|w| format!("closed allow window {} of {}", w.compiled.label, w.owner));
    let next = allows
        .iter()
        .filter_map(|&i| match states[i] {
            WindowState::Closed { opens: Some(t) } => Some((t, i)),
            _ => None,
        })
        .min();
    Some(match next {
        Some((opens, i)) => {
            let w = &windows[i];
            Hold {
                kind: HoldKind::Window,
                reason: format!(
                    "outside every allow window; allow window {} of {} opens {}",
                    w.compiled.label,
                    w.owner,
                    utc_text(opens)
                ),
                until: Some(opens),
                suspends_self_heal,
            }
        }
        None => Hold {
            kind: HoldKind::Window,
            reason: "outside every allow window, and none opens again".to_owned(),
            until: None,
            suspends_self_heal,
        },
    })
}
