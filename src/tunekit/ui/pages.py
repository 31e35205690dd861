"""The console's pages: one route per view, each a template over data from ``views`` or the API.

Pages that act (promote, roll back) post a form with the session's CSRF token, after a confirmation
page that names what will change; pages that watch (a job) poll the API from ``console.js``.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, RedirectResponse, Response

from tunekit import registry
from tunekit.errors import AuthError, NotFound, RegistryError
from tunekit.report import restamp
from tunekit.ui import views
from tunekit.ui.session import COOKIE, PRE_COOKIE, Session, check_csrf
from tunekit.ui.web import CARD_CSP, Console, pages, secure, set_session_cookie

__all__ = ["router"]


def router(console: Console, runtime) -> APIRouter:
    ui = APIRouter(include_in_schema=False)
    page = pages(console)
    p = console.prefix

    # -- signing in and out ------------------------------------------------------------------------

    @ui.get(p)
    @ui.get(p + "/")
    async def home() -> Response:
        return RedirectResponse(f"{p}/runs", status_code=303)

    @ui.get(p + "/signin")
    async def signin_form(request: Request, next: str = "") -> Response:
        return _signin_page(request, next, "", 200)

    @ui.post(p + "/signin")
    async def signin(request: Request) -> Response:
        form = await request.form()
        target = _local(str(form.get("next") or ""), p)
        pre = request.cookies.get(PRE_COOKIE)
        try:
            check_csrf(pre or "", str(form.get("csrf") or ""))
        except Exception:  # noqa: BLE001 - any mismatch: show the form again with a fresh token
            return _signin_page(request, target, "The sign-in form expired; paste the key again.", 403)
        client = request.client.host if request.client else "local"
        if console.sessions.auth and runtime.auth_failures.wait(client) is not None:
            return _signin_page(request, target, "Too many failed sign-ins from this address; wait a minute and try again.", 429)
        try:
            session = console.sessions.sign_in(str(form.get("key") or ""))
        except AuthError as exc:
            runtime.auth_failures.check(client)  # takes one of the address's failed sign-ins, as a 401 of the API does
            return _signin_page(request, target, str(exc), 401)
        response = RedirectResponse(target, status_code=303)
        set_session_cookie(response, request, session, p)
        response.delete_cookie(PRE_COOKIE, path=p)
        return response

    def _signin_page(request: Request, target: str, error: str, status: int) -> Response:
        import secrets

        token = secrets.token_urlsafe(32)
        response = console.page(request, "signin.html", None, status=status, next=target, error=error, signin_csrf=token)
        response.set_cookie(PRE_COOKIE, token, httponly=True, samesite="strict", secure=request.url.scheme == "https", path=p, max_age=3600)
        return response

    @ui.post(p + "/signout")
    @page
    async def signout(request: Request, session: Session) -> Response:
        form = await request.form()
        console.csrf(session, request, str(form.get("csrf") or ""))
        console.sessions.sign_out(session.id)
        response = RedirectResponse(f"{p}/signin", status_code=303)
        response.delete_cookie(COOKIE, path=p)
        return response

    # -- runs --------------------------------------------------------------------------------------

    @ui.get(p + "/runs")
    @page
    async def runs(request: Request, session: Session) -> Response:
        session.require("fine-tune", "Viewing runs")
        return console.page(request, "runs.html", session, runs=views.runs(console.workspace, session))

    @ui.get(p + "/runs/compare")
    @page
    async def compare(request: Request, session: Session, a: str = "", b: str = "") -> Response:
        session.require("fine-tune", "Viewing runs")
        if not a or not b:
            raise NotFound("pick two runs to compare: tick two rows on the Runs page, then press Compare", param="a")
        left, right = views.find_run(console.workspace, session, a), views.find_run(console.workspace, session, b)
        metrics = sorted(set(left["metrics"]) | set(right["metrics"]))
        return console.page(request, "compare.html", session, left=left, right=right, metrics=metrics)

    @ui.get(p + "/runs/{run_id}")
    @page
    async def run(request: Request, session: Session, run_id: str) -> Response:
        session.require("fine-tune", "Viewing runs")
        return console.page(request, "run.html", session, run=views.find_run(console.workspace, session, run_id))

    @ui.get(p + "/runs/{run_id}/report")
    @page
    async def report_card(request: Request, session: Session, run_id: str) -> Response:
        session.require("fine-tune", "Viewing runs")
        row = views.find_run(console.workspace, session, run_id)
        if not row["has_html"]:
            raise NotFound(f"run {run_id} has no report card yet (report.html is written when the run ends)")
        return secure(FileResponse(console.workspace.run(row["id"]) / "report.html", media_type="text/html"), CARD_CSP)

    # -- models ------------------------------------------------------------------------------------

    def mlc():
        return registry.client(console.tracking_uri)

    async def admin_form(request: Request, session: Session, name: str, doing: str, done: str) -> tuple[dict, str]:
        """The posted form of a change to ``name``'s aliases, once its CSRF token, the key's admin scope and
        the model's visibility to this key are checked; with the form's reason (``done`` when left empty)."""
        form = await request.form()
        console.csrf(session, request, str(form.get("csrf") or ""))
        session.require("admin", doing)
        views.model_detail(mlc(), session, name)  # a model this key may not see is a 404, as in the API
        return form, str(form.get("reason") or "").strip() or done

    @ui.get(p + "/models")
    @page
    async def models(request: Request, session: Session) -> Response:
        session.require("fine-tune", "Viewing models")
        return console.page(request, "models.html", session, models=views.models(mlc(), session))

    @ui.get(p + "/models/{name}")
    @page
    async def model(request: Request, session: Session, name: str, done: str = "") -> Response:
        session.require("fine-tune", "Viewing models")
        return console.page(request, "model.html", session, model=views.model_detail(mlc(), session, name), done=done)

    @ui.get(p + "/models/{name}/promote")
    @page
    async def promote_confirm(request: Request, session: Session, name: str, version: str = "") -> Response:
        session.require("admin", "Promoting a model")
        detail = views.model_detail(mlc(), session, name)
        if version not in {v["version"] for v in detail["versions"]}:
            raise NotFound(f"{name} has no version {version!r}; versions: {', '.join(v['version'] for v in detail['versions'])}", param="version")
        if version == detail["champion"]:
            raise RegistryError(f"{name} v{version} is already the champion; nothing would change")
        return console.page(request, "confirm.html", session, model=detail, action="promote", version=version,
                            old=detail["champion"], new=version)

    @ui.get(p + "/models/{name}/rollback")
    @page
    async def rollback_confirm(request: Request, session: Session, name: str) -> Response:
        session.require("admin", "Rolling back a model")
        detail = views.model_detail(mlc(), session, name)
        old, new = registry.rollback_target(mlc(), name)
        return console.page(request, "confirm.html", session, model=detail, action="rollback", version=new, old=old, new=new)

    @ui.post(p + "/models/{name}/promote")
    @page
    async def promote(request: Request, session: Session, name: str) -> Response:
        form, reason = await admin_form(request, session, name, "Promoting a model", "promoted in the console")
        version = str(form.get("version") or "")
        client = mlc()
        prev = registry.promote(client, name, version, reason, by=session.who)
        _restamp(client, name, version, "champion", f"promoted in the console: {reason}")
        if prev:
            _restamp(client, name, prev, "none", f"replaced as champion by v{version} ({reason})")
        done = f"v{version} is now champion" + (f" (was v{prev})" if prev else "")
        return RedirectResponse(f"{p}/models/{name}?done={done}", status_code=303)

    @ui.post(p + "/models/{name}/rollback")
    @page
    async def rollback(request: Request, session: Session, name: str) -> Response:
        form, reason = await admin_form(request, session, name, "Rolling back a model", "rolled back in the console")
        expected = str(form.get("expected") or "")
        client = mlc()
        current = registry.rollback_target(client, name)
        if expected and expected != f"{current[0]}>{current[1]}":  # someone else changed the champion since the confirmation
            raise RegistryError(f"{name}'s champion changed since you confirmed (a rollback now goes v{current[0]} -> v{current[1]}); "
                                "open the model again and confirm what is there now")
        old, new = registry.rollback(client, name, reason, by=session.who)
        _restamp(client, name, new, "champion", f"champion again by rollback: {reason}")
        _restamp(client, name, old, "none", f"rolled back to v{new} ({reason})")
        return RedirectResponse(f"{p}/models/{name}?done=champion rolled back from v{old} to v{new}", status_code=303)

    # -- jobs, evals, production, playground ------------------------------------------------------------

    @ui.get(p + "/jobs")
    @page
    async def jobs(request: Request, session: Session) -> Response:
        session.require("fine-tune", "Fine-tuning")
        listed = await console.api_json(request, session, "GET", "/v1/fine_tuning/jobs", params={"limit": 100})
        files = await console.api_json(request, session, "GET", "/v1/files", params={"purpose": "fine-tune"})
        from tunekit.service.catalogue import Catalogue
        from tunekit.service.jobs import HYPERPARAMETERS

        return console.page(request, "jobs.html", session, jobs=listed["data"], files=files["data"],
                            bases=Catalogue(console.workspace).list(), hyperparameters=HYPERPARAMETERS)

    @ui.get(p + "/jobs/{job_id}")
    @page
    async def job(request: Request, session: Session, job_id: str) -> Response:
        session.require("fine-tune", "Fine-tuning")
        found = await console.api_json(request, session, "GET", f"/v1/fine_tuning/jobs/{job_id}")
        answer = await console.call_api(request, session, "GET", f"/v1/files/{found['training_file']}")
        filename = answer.json().get("filename") if answer.status_code == 200 else None  # a deleted file leaves its id
        return console.page(request, "job.html", session, job=found, filename=filename)

    @ui.get(p + "/evals")
    @page
    async def evals(request: Request, session: Session) -> Response:
        session.require("fine-tune", "Viewing evals")
        listed = (await console.api_json(request, session, "GET", "/v1/evals", params={"limit": 100}))["data"]
        for ev in listed:
            ev["runs"] = (await console.api_json(request, session, "GET", f"/v1/evals/{ev['id']}/runs", params={"limit": 100}))["data"]
        return console.page(request, "evals.html", session, evals=listed)

    @ui.get(p + "/evals/{eval_id}/runs/{run_id}")
    @page
    async def eval_run(request: Request, session: Session, eval_id: str, run_id: str) -> Response:
        session.require("fine-tune", "Viewing evals")
        ev = await console.api_json(request, session, "GET", f"/v1/evals/{eval_id}")
        found = await console.api_json(request, session, "GET", f"/v1/evals/{eval_id}/runs/{run_id}")
        failing = (await console.api_json(request, session, "GET", f"/v1/evals/{eval_id}/runs/{run_id}/output_items",
                                          params={"status": "fail", "limit": 100}))["data"]
        return console.page(request, "eval_run.html", session, eval=ev, run=found, failing=failing)

    @ui.get(p + "/production")
    @page
    async def production(request: Request, session: Session, window: str = "24h") -> Response:
        session.require("admin", "Viewing production traffic (every project's requests)")
        if window not in views.WINDOWS:
            raise NotFound(f"window {window!r}: choose one of {', '.join(views.WINDOWS)}", param="window")
        return console.page(request, "production.html", session, traffic=views.production(console.workspace, window),
                            reports=views.monitor_reports(console.workspace), windows=list(views.WINDOWS))

    @ui.get(p + "/playground")
    @page
    async def playground(request: Request, session: Session) -> Response:
        session.require("inference", "The playground")
        served = await console.api_json(request, session, "GET", "/v1/models")
        from tunekit.service.catalogue import Catalogue

        bases = {b.name for b in Catalogue(console.workspace).list()}  # listed to fine-tune from, not served for chat
        return console.page(request, "playground.html", session, models=[m["id"] for m in served["data"] if m["id"] not in bases],
                            max_tokens=min(64, console.max_new_tokens), max_new_tokens=console.max_new_tokens)

    return ui


def _restamp(mlc, name: str, version: str, alias: str, why: str) -> None:
    """Bring the version's report card up to date with its new alias (as ``tunekit registry promote`` does)."""
    run_dir = (mlc.get_model_version(name, str(version)).tags or {}).get("run_dir")
    if run_dir:
        restamp(Path(run_dir), alias, why)


def _local(target: str, prefix: str) -> str:
    """Only a path of this console is a place to go back to after sign-in (no open redirect)."""
    return target if target.startswith(prefix + "/") and not target.startswith("//") and "\\" not in target else prefix + "/runs"
