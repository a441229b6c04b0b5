//! Children that every plan keeps beside the revisions: the NetworkPolicy, and in Gateway API
//! mode the Services `<name>-stable` / `<name>-canary` with HTTPRoute `<name>` weighting them.

use kube::ResourceExt;

use super::{Action, Planner, RouteState, reason};
use crate::api::{ConditionStatus, TrafficMode};
use crate::build::route::{self, Weights};
use crate::build::service::Selection;
use crate::build::{self, Child, ChildKind, ChildRef};
use crate::conditions::DEGRADED;
use crate::naming;

impl Planner<'_> {
    /// Whether traffic is split by a Gateway API route.
    pub(super) fn gateway_mode(&self) -> bool {
        let traffic = &self.md.spec.rollout.traffic;
        traffic.mode == TrafficMode::GatewayApi && traffic.gateway_api.is_some()
    }

    /// The NetworkPolicy: kept while `spec.networkPolicy.enabled`, removed otherwise.
    pub(super) fn reachability(&mut self) {
        let md = self.md;
        if self
            .observed
            .network_policy
            .as_ref()
            .is_some_and(|p| p.foreign)
        {
            // Never taken over: said by `foreign_children`.
            return;
        }
        if md.spec.network_policy.enabled {
            let policy = build::network_policy::build(md, &self.settings.operator_namespace);
            self.apply_if_changed(Child::NetworkPolicy(Box::new(policy)));
        } else if let Some(p) = &self.observed.network_policy {
            self.actions.push(Action::Delete(ChildRef {
                kind: ChildKind::NetworkPolicy,
                name: p.name.clone(),
            }));
        }
    }

    /// Gateway API mode: `<name>-stable` selects `stable`, `<name>-canary` the canary (or
    /// stable, so the backend always exists), and the route weights them. Other modes: those
    /// children go if they exist (the mode was switched).
    pub(super) fn gateway_traffic(&mut self, stable: Option<&str>, canary: Option<(&str, i32)>) {
        let md = self.md;
        let name = md.name_any();
        let gateway = md
            .spec
            .rollout
            .traffic
            .gateway_api
            .as_ref()
            .filter(|_| self.gateway_mode());
        let (Some(gateway), Some(stable)) = (gateway, stable) else {
            for s in self.observed.side_services.clone() {
                self.actions.push(Action::Delete(ChildRef {
                    kind: ChildKind::Service,
                    name: s.name,
                }));
            }
            if matches!(self.observed.route, RouteState::Owned { .. }) && !self.gateway_mode() {
                self.actions.push(Action::Delete(ChildRef {
                    kind: ChildKind::Route,
                    name: naming::route(&name),
                }));
            }
            return;
        };
        let (canary_revision, canary_weight) = canary.unwrap_or((stable, 0));
        for (service, revision) in [
            (naming::stable_service(&name), stable),
            (naming::canary_service(&name), canary_revision),
        ] {
            let s = build::service::build_named(md, service, Selection::Revision(revision));
            self.apply_if_changed(Child::Service(Box::new(s)));
        }
        // Only a route Drover owns (or none yet) is written.
        if matches!(
            self.observed.route,
            RouteState::Owned { .. } | RouteState::Absent
        ) {
            let weights = Weights {
                stable: 100 - canary_weight.clamp(0, 100),
                canary: canary_weight.clamp(0, 100),
            };
            let r = route::build(md, gateway, weights);
            self.apply_if_changed(Child::Route(Box::new(r)));
        }
    }

    /// A NetworkPolicy of Drover's name that Drover does not own is left alone, and said.
    pub(super) fn foreign_children(&mut self) {
        let md = self.md;
        if md.spec.network_policy.enabled
            && let Some(p) = self.observed.network_policy.as_ref().filter(|p| p.foreign)
        {
            let message = format!(
                "NetworkPolicy {:?} exists and is not controlled by this ModelDeployment; Drover never takes over an object it does not own: delete or rename it, or set spec.networkPolicy.enabled: false",
                p.name
            );
            self.condition(
                DEGRADED,
                ConditionStatus::True,
                reason::NETWORK_POLICY_NOT_OWNED,
                message,
            );
        }
    }

    /// A parent Gateway that did not accept the route degrades the ModelDeployment: traffic
    /// does not flow the way the spec says.
    pub(super) fn route_acceptance(&mut self) {
        if !self.gateway_mode() {
            return;
        }
        if let RouteState::Owned {
            not_accepted: Some((why, message)),
            ..
        } = &self.observed.route
        {
            let message = format!("{why}: {message}");
            self.condition(
                DEGRADED,
                ConditionStatus::True,
                reason::ROUTE_NOT_ACCEPTED,
                message,
            );
        }
    }
}
