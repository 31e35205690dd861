"""Carrying out a live decision (``monitor.decide``): the registry and the deployment follow it.

- ``promote``: the challenger becomes ``champion`` through ``registry.promote`` (the same call and
  audit event as an offline promotion, with the live evidence as its reason); a server serving
  ``NAME@champion`` swaps it in at its next registry check, and the deployment is switched off
  (the challenger now answers everything).
- ``rollback``: the challenger's traffic stops: the deployment is switched ``off`` and the event
  ``canary_rolled_back`` (or ``shadow_rejected`` for a shadow) goes on its version's audit trail.
- ``need_more_data``: nothing moves; the event ``live_decision`` records the evidence so far and
  the power estimate, so the history shows each look at the data, not only the last.
"""

from __future__ import annotations

from pathlib import Path

from tunekit import registry
from tunekit.errors import ConfigError
from tunekit.monitor.decide import NEED_MORE, PROMOTE, LiveDecision
from tunekit.serve.deployment import DeploymentState, read_state, write_state


def apply(decision: LiveDecision, name: str, tracking_uri: str | None, workspace: Path) -> str:
    """Audit ``decision`` on the challenger's version and act on it; returns a sentence saying what was done."""
    version = decision.challenger.version
    if version is None:
        raise ConfigError("decide: the challenger is a folder, not a registry version, so there is no version to promote or audit; "
                          "register it (`tunekit run`) and pass challenger as NAME/VERSION")
    mlc = registry.client(tracking_uri or registry.default_tracking_uri())
    state = read_state(workspace)
    extra = {"difference": decision.difference, "low": decision.low, "high": decision.high,
             "n_champion": decision.champion.n, "n_challenger": decision.challenger.n}
    if decision.action == NEED_MORE:
        registry.audit(mlc, name, version, "live_decision", decision.summary(), more_per_arm=decision.more_per_arm, **extra)
        return f"kept the deployment ({state.mode}); audited on {name} v{version}"
    if decision.action == PROMOTE:
        replaced = registry.promote(mlc, name, version, reason=decision.summary())
        done = f"promoted {name} v{version} to champion (replacing v{replaced})"
    else:
        action = "shadow_rejected" if state.mode == "shadow" else "canary_rolled_back"
        registry.audit(mlc, name, version, action, decision.summary(), **extra)
        done = f"stopped {name} v{version}'s {state.mode if state.mode != 'off' else 'deployment'} ({action})"
    if state.mode != "off":
        write_state(workspace, DeploymentState(mode="off", reason=decision.summary()[:2000]))
        done += "; deployment switched off (a running server follows within deployment_poll_s)"
    return done
