#!/usr/bin/env python3
"""Semantic checks of clerk-sync's deployment files, run by scripts/test-deploy.sh.

The schema validators (check-jsonschema, kubernetes-validate, promtool, hadolint, the KEDA and
Prometheus Operator models) say whether each file is well-formed; this script checks what they
cannot: that the pieces fit together (names, ports, selectors, queue names, secrets), that every
alert is documented and unit-tested, and that every metric the alerts and the dashboard use is
exported by the running gateway or worker.

Subcommands print one `ok ...` line per passed check and exit 1 on the first file with failures.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES_DIR = ROOT / "deploy/prometheus/rules"
TESTS_DIR = ROOT / "deploy/prometheus/tests"
DASHBOARD_DIR = ROOT / "deploy/grafana/dashboards"
OPERATIONS = ROOT / "docs/operations.md"
SECRET_NAME = "clerk-sync"
SECRET_KEYS = {"webhook-signing-secret", "amqp-url", "database-url", "clerk-secret-key"}
ADMIN_PORTS = {"gateway": 9091, "worker": 9092}
# Seconds the processes may spend draining after SIGTERM (gateway.shutdown_timeout,
# worker.shutdown_timeout); the grace period must cover it.
DRAIN_SECONDS = 30


class Checker:
    def __init__(self, title: str):
        self.title = title
        self.failures: list[str] = []
        self.passed = 0

    def ok(self, cond: bool, what: str, detail: str = "") -> bool:
        if cond:
            self.passed += 1
            print(f"  ok   {what}")
        else:
            self.failures.append(f"{what}{': ' + detail if detail else ''}")
            print(f"  FAIL {what}{': ' + detail if detail else ''}")
        return cond

    def done(self) -> int:
        if self.failures:
            print(f"{self.title}: {len(self.failures)} failure(s), {self.passed} passed")
            return 1
        print(f"{self.title}: all {self.passed} checks passed")
        return 0


def load_yaml_docs(path: Path) -> list[dict]:
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


# --------------------------------------------------------------------------------------------------
# docker compose
# --------------------------------------------------------------------------------------------------
def cmd_compose(args) -> int:
    c = Checker("compose")
    raw_text = (ROOT / "docker-compose.yml").read_text()
    raw = yaml.safe_load(raw_text)
    resolved = yaml.safe_load(Path(args.resolved).read_text())
    services = resolved["services"]
    c.ok(raw.get("name") == "clerk-sync", "project name is clerk-sync")

    expected = {"postgres", "rabbitmq", "migrate", "gateway", "worker", "prometheus", "grafana"}
    c.ok(expected <= set(services), "services: " + ", ".join(sorted(expected)), f"have {sorted(services)}")

    # Health-checked start order.
    for name, svc in services.items():
        for dep, spec in (svc.get("depends_on") or {}).items():
            cond = spec.get("condition") if isinstance(spec, dict) else None
            c.ok(dep in services, f"{name} depends on existing service {dep}")
            c.ok(cond in ("service_healthy", "service_completed_successfully"),
                 f"{name} waits for {dep} to be {cond}", "use a health or completion condition")
            if cond == "service_healthy":
                hc = services[dep].get("healthcheck") or {}
                c.ok(bool(hc.get("test")) and hc.get("test") != ["NONE"] and not hc.get("disable"),
                     f"{dep} has a healthcheck ({name} waits for it)")
    deps = lambda s: set((services[s].get("depends_on") or {}))  # noqa: E731
    c.ok({"postgres", "rabbitmq", "migrate"} <= deps("worker"), "worker starts after postgres, rabbitmq and migrate")
    c.ok(services["worker"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully",
         "worker waits for the migration to complete")
    c.ok("rabbitmq" in deps("gateway"), "gateway starts after rabbitmq")
    c.ok("postgres" in deps("migrate"), "migrate starts after postgres")
    c.ok("prometheus" in deps("grafana"), "grafana starts after prometheus")
    c.ok(services["migrate"].get("command") == ["clerk-sync", "migrate"], "migrate runs `clerk-sync migrate`")
    c.ok(services["migrate"].get("restart") in ("no", None), "migrate is one-shot (restart: no)")

    # Scalable workers.
    w = services["worker"]
    c.ok("container_name" not in w and not w.get("ports"), "worker is scalable (no container_name, no published port)")
    for name in ("gateway", "worker"):
        c.ok(str(services[name].get("stop_grace_period", "")) in ("35s", "40s", "45s", "1m"),
             f"{name} stop_grace_period covers the {DRAIN_SECONDS}s drain", str(services[name].get("stop_grace_period")))

    # Ports: admin ports never published; everything published on loopback only.
    for name, svc in services.items():
        for p in svc.get("ports") or []:
            spec = p if isinstance(p, str) else f"{p.get('host_ip', '')}:{p.get('published')}:{p.get('target')}"
            c.ok(spec.startswith("127.0.0.1:"), f"{name} publishes {spec} on 127.0.0.1 only")
            c.ok(not re.search(r":(9091|9092)(/tcp)?$", spec), f"{name} does not publish an admin port ({spec})")

    # Volumes: Postgres keeps its data; bind mounts exist in the repository.
    pg_vols = [v if isinstance(v, str) else f"{v.get('source')}:{v.get('target')}" for v in services["postgres"].get("volumes", [])]
    c.ok(any(v.split(":")[0] in (resolved.get("volumes") or {}) for v in pg_vols), "postgres data on a named volume", str(pg_vols))
    for name, svc in raw["services"].items():
        for v in svc.get("volumes") or []:
            src = v.split(":")[0] if isinstance(v, str) else v.get("source", "")
            if src.startswith("./"):
                c.ok((ROOT / src).exists(), f"{name} bind mount {src} exists")

    # RabbitMQ plugins, Prometheus scrape targets, Grafana provisioning.
    plugins = (ROOT / "deploy/rabbitmq/enabled_plugins").read_text()
    c.ok("rabbitmq_management" in plugins and "rabbitmq_prometheus" in plugins,
         "rabbitmq enables the management and prometheus plugins")
    prom = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    for job, host, port in (("clerk-sync-gateway", "gateway", 9091), ("clerk-sync-worker", "worker", 9092)):
        sd = (jobs.get(job) or {}).get("dns_sd_configs") or [{}]
        c.ok(host in (sd[0].get("names") or []) and sd[0].get("port") == port,
             f"prometheus discovers every {host} replica on :{port} (dns_sd)")
    targets = {t for j in jobs.values() for sc in j.get("static_configs", []) for t in sc["targets"]}
    c.ok("rabbitmq:15692" in targets, "prometheus scrapes rabbitmq:15692")
    c.ok(any(j.get("metrics_path") == "/metrics/detailed" for j in jobs.values()),
         "prometheus scrapes RabbitMQ's per-queue metrics (/metrics/detailed)")
    gvols = " ".join(v if isinstance(v, str) else v.get("source", "") for v in raw["services"]["grafana"]["volumes"])
    c.ok("deploy/grafana/provisioning" in gvols and "deploy/grafana/dashboards" in gvols,
         "grafana mounts the provisioning and the dashboards")
    dash_provider = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/clerk-sync.yml").read_text())
    mount_targets = [v.split(":")[1] for v in raw["services"]["grafana"]["volumes"] if isinstance(v, str) and v.startswith("./")]
    c.ok(dash_provider["providers"][0]["options"]["path"] in mount_targets,
         "grafana dashboard provider path is where the dashboards are mounted")

    # Secrets: every ${VAR} documented in .env.example; no secret literal in the file.
    example = (ROOT / ".env.example").read_text()
    for var in sorted(set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", raw_text))):
        c.ok(re.search(rf"^#?\s*{var}=", example, re.M) is not None, f"${{{var}}} is documented in .env.example")
    c.ok("whsec_" not in raw_text.replace("whsec_...", ""), "no signing secret in docker-compose.yml")

    # Environment of the clerk-sync services, for `--check-config` by the caller.
    out = Path(args.env_out)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("gateway", "worker", "migrate"):
        env = services[name].get("environment") or {}
        if isinstance(env, list):
            env = dict(e.split("=", 1) for e in env)
        (out / f"compose-{name}.env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    print(f"  (wrote the environment of gateway, worker and migrate to {out})")
    return c.done()


# --------------------------------------------------------------------------------------------------
# Kubernetes
# --------------------------------------------------------------------------------------------------
def pod_spec(doc: dict) -> dict | None:
    if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return doc["spec"]["template"]["spec"]
    return None


def labels_match(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def cmd_k8s(args) -> int:
    c = Checker("kubernetes")
    crs: list[dict] = []
    rmq: list[dict] = []
    out = Path(args.env_out)
    out.mkdir(parents=True, exist_ok=True)
    for rendered in args.rendered:
        name = Path(rendered).stem.removeprefix("k8s-")
        docs = load_yaml_docs(Path(rendered))
        by_kind: dict[str, list[dict]] = {}
        for d in docs:
            by_kind.setdefault(d["kind"], []).append(d)
        print(f"- {name}: {len(docs)} resources ({', '.join(sorted(by_kind))})")
        if args.collect_only:
            crs.extend({"source": name, "resource": d} for k in ("ScaledObject", "TriggerAuthentication", "PodMonitor")
                       for d in by_kind.get(k, []))
            rmq.extend(by_kind.get("RabbitmqCluster", []))
            continue
        get = lambda kind, n: next((d for d in by_kind.get(kind, []) if d["metadata"]["name"] == n), None)  # noqa: E731

        for kind in ("Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Job",
                     "ConfigMap", "NetworkPolicy", "ScaledObject", "TriggerAuthentication"):
            c.ok(kind in by_kind, f"{name}: has a {kind}")
        c.ok("Secret" not in by_kind, f"{name}: defines no Secret (references only)")

        configmaps = by_kind.get("ConfigMap", [])
        config = configmaps[0]["data"] if configmaps else {}
        prefix = config.get("CLERK_SYNC__AMQP__PREFIX", "clerk")
        (out / f"k8s-{name}.env").write_text("".join(f"{k}={v}\n" for k, v in config.items()))

        deployments = {d["metadata"]["name"]: d for d in by_kind.get("Deployment", [])}
        gw, wk = deployments.get("clerk-sync-gateway"), deployments.get("clerk-sync-worker")
        c.ok(gw is not None and wk is not None, f"{name}: gateway and worker Deployments")
        if not (gw and wk):
            continue
        job = get("Job", "clerk-sync-migrate")
        c.ok(job is not None and job["spec"]["template"]["spec"]["containers"][0].get("args") == ["clerk-sync", "migrate"],
             f"{name}: migration Job runs `clerk-sync migrate`")

        for d in list(deployments.values()) + by_kind.get("Job", []):
            spec = pod_spec(d)
            dn = d["metadata"]["name"]
            psc = spec.get("securityContext") or {}
            c.ok(psc.get("runAsNonRoot") is True and psc.get("runAsUser", 0) != 0, f"{name}: {dn} runs as non-root")
            c.ok(spec.get("automountServiceAccountToken") is False, f"{name}: {dn} mounts no service account token")
            for ctr in spec.get("containers", []) + spec.get("initContainers", []):
                cid = f"{dn}/{ctr['name']}"
                res = ctr.get("resources") or {}
                c.ok(all(k in (res.get("requests") or {}) for k in ("cpu", "memory"))
                     and all(k in (res.get("limits") or {}) for k in ("cpu", "memory")),
                     f"{name}: {cid} has cpu/memory requests and limits")
                sc = ctr.get("securityContext") or {}
                c.ok(sc.get("allowPrivilegeEscalation") is False and sc.get("readOnlyRootFilesystem") is True
                     and "ALL" in ((sc.get("capabilities") or {}).get("drop") or []),
                     f"{name}: {cid} is locked down (no privilege escalation, read-only root, no capabilities)")
                refs = [e for e in ctr.get("env", []) if "valueFrom" in e and "secretKeyRef" in e["valueFrom"]]
                for e in refs:
                    ref = e["valueFrom"]["secretKeyRef"]
                    c.ok(ref["name"] == SECRET_NAME and ref["key"] in SECRET_KEYS,
                         f"{name}: {cid} {e['name']} from Secret {ref['name']}/{ref['key']}")
                for e in ctr.get("env", []):
                    v = str(e.get("value", ""))
                    c.ok(not re.search(r"whsec_|sk_live_|sk_test_|://[^/\s:]+:[^@\s]+@", v),
                         f"{name}: {cid} {e['name']} carries no secret value")
                c.ok(any(ef.get("configMapRef", {}).get("name") in {m["metadata"]["name"] for m in configmaps}
                         for ef in ctr.get("envFrom", [])),
                     f"{name}: {cid} reads the generated ConfigMap")

        # Probes on the admin port; grace periods; listen addresses.
        for comp, d in (("gateway", gw), ("worker", wk)):
            spec = pod_spec(d)
            ctr = spec["containers"][0]
            ports = {p["name"]: p["containerPort"] for p in ctr.get("ports", [])}
            c.ok(ports.get("admin") == ADMIN_PORTS[comp], f"{name}: {comp} admin port {ADMIN_PORTS[comp]}")
            listen = config.get(f"CLERK_SYNC__{comp.upper()}__ADMIN_LISTEN", "")
            c.ok(listen == f"0.0.0.0:{ADMIN_PORTS[comp]}", f"{name}: {comp} admin listens on 0.0.0.0:{ADMIN_PORTS[comp]}", listen)
            for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
                hg = (ctr.get(probe) or {}).get("httpGet") or {}
                port = hg.get("port")
                c.ok(hg.get("path") == path and (port == "admin" or port == ADMIN_PORTS[comp]),
                     f"{name}: {comp} {probe} GET {path} on the admin port", json.dumps(hg))
            grace = spec.get("terminationGracePeriodSeconds", 30)
            c.ok(grace >= DRAIN_SECONDS + 5, f"{name}: {comp} terminationGracePeriodSeconds {grace} >= {DRAIN_SECONDS + 5}")
            c.ok(d["spec"].get("replicas") is None, f"{name}: {comp} replicas left to its autoscaler")
        gports = {p["name"]: p["containerPort"] for p in pod_spec(gw)["containers"][0]["ports"]}
        c.ok(config.get("CLERK_SYNC__GATEWAY__LISTEN") == f"0.0.0.0:{gports.get('http')}", f"{name}: gateway listens on its http port")
        c.ok(any(i.get("args") == ["clerk-sync", "migrate", "--check"] for i in pod_spec(wk).get("initContainers", [])),
             f"{name}: workers wait for migrations (clerk-sync migrate --check)")

        # Service, HPA, PDBs.
        svc = get("Service", "clerk-sync-gateway")
        gw_labels = gw["spec"]["template"]["metadata"]["labels"]
        wk_labels = wk["spec"]["template"]["metadata"]["labels"]
        c.ok(svc is not None and labels_match(svc["spec"]["selector"], gw_labels)
             and not labels_match(svc["spec"]["selector"], wk_labels), f"{name}: Service selects the gateway pods only")
        if svc:
            c.ok(all(p.get("targetPort") in gports or p.get("targetPort") in gports.values() for p in svc["spec"]["ports"]),
                 f"{name}: Service targets a declared gateway port")
            c.ok(all(p.get("targetPort") not in ("admin", 9091) for p in svc["spec"]["ports"]),
                 f"{name}: Service does not expose the admin port")
        hpa = get("HorizontalPodAutoscaler", "clerk-sync-gateway")
        c.ok(hpa is not None and hpa["spec"]["scaleTargetRef"]["name"] == "clerk-sync-gateway"
             and any(m.get("resource", {}).get("name") == "cpu" for m in hpa["spec"]["metrics"]),
             f"{name}: HPA scales the gateway on CPU")
        c.ok(not any(h["spec"]["scaleTargetRef"]["name"] == "clerk-sync-worker" for h in by_kind.get("HorizontalPodAutoscaler", [])),
             f"{name}: no HPA on the worker (KEDA owns it)")
        for comp, labels in (("gateway", gw_labels), ("worker", wk_labels)):
            c.ok(any(labels_match(p["spec"]["selector"]["matchLabels"], labels) for p in by_kind.get("PodDisruptionBudget", [])),
                 f"{name}: a PodDisruptionBudget covers the {comp}")

        # KEDA.
        so = get("ScaledObject", "clerk-sync-worker")
        if c.ok(so is not None, f"{name}: ScaledObject clerk-sync-worker"):
            c.ok(so["spec"]["scaleTargetRef"]["name"] == "clerk-sync-worker", f"{name}: ScaledObject targets the worker Deployment")
            trig = so["spec"]["triggers"]
            rq = [t for t in trig if t["type"] == "rabbitmq"]
            c.ok(len(rq) == 1, f"{name}: one rabbitmq trigger")
            if rq:
                md = rq[0]["metadata"]
                c.ok(md.get("queueName") == f"{prefix}.sync", f"{name}: trigger queue is {prefix}.sync (the ConfigMap's prefix)", md.get("queueName"))
                c.ok(md.get("mode") == "QueueLength" and str(md.get("value", "")).isdigit(), f"{name}: trigger scales on QueueLength")
                c.ok("host" not in md, f"{name}: trigger has no inline broker URL")
                ta = get("TriggerAuthentication", (rq[0].get("authenticationRef") or {}).get("name", ""))
                c.ok(ta is not None and any(r["parameter"] == "host" and r["name"] == SECRET_NAME and r["key"] in SECRET_KEYS
                                            for r in ta["spec"].get("secretTargetRef", [])),
                     f"{name}: TriggerAuthentication takes the host from the {SECRET_NAME} Secret")
            lo, hi = so["spec"].get("minReplicaCount", 0), so["spec"].get("maxReplicaCount", 100)
            pool = int(config.get("CLERK_SYNC__DATABASE__MAX_CONNECTIONS", 8))
            c.ok(1 <= lo <= hi and hi * pool <= 90, f"{name}: workers {lo}..{hi} x {pool} connections fit in Postgres' 100")

        # NetworkPolicy: the admin ports only from Prometheus.
        policies = by_kind.get("NetworkPolicy", [])
        for comp, labels in (("gateway", gw_labels), ("worker", wk_labels)):
            port = ADMIN_PORTS[comp]
            mine = [p for p in policies if labels_match(p["spec"]["podSelector"].get("matchLabels"), labels)
                    and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])]
            c.ok(bool(mine), f"{name}: a NetworkPolicy selects the {comp} pods")
            allowing = []
            leaks = []
            for p in mine:
                for rule in p["spec"].get("ingress", []):
                    rports = [x.get("port") for x in rule.get("ports", [])]
                    if rports and port not in rports and "admin" not in rports:
                        continue
                    allowing.append(rule)
                    peers = rule.get("from") or []
                    if not peers:
                        leaks.append("from anywhere")
                    for peer in peers:
                        sel = (peer.get("podSelector") or {}).get("matchLabels") or {}
                        if "ipBlock" in peer or sel.get("app.kubernetes.io/name") != "prometheus":
                            leaks.append(json.dumps(peer))
            c.ok(bool(allowing), f"{name}: {comp} admin port {port} reachable by Prometheus")
            c.ok(not leaks, f"{name}: {comp} admin port {port} reachable by Prometheus only", "; ".join(leaks))

        for d in by_kind.get("ScaledObject", []) + by_kind.get("TriggerAuthentication", []) + by_kind.get("PodMonitor", []):
            crs.append({"source": name, "resource": d})
        for d in by_kind.get("RabbitmqCluster", []):
            rmq.append(d)
        for pm in by_kind.get("PodMonitor", []):
            sel = pm["spec"]["selector"].get("matchLabels", {})
            eps = pm["spec"]["podMetricsEndpoints"]
            if pm["metadata"]["name"] in ("clerk-sync-gateway", "clerk-sync-worker"):
                comp = pm["metadata"]["name"].split("-")[-1]
                target = gw if comp == "gateway" else wk
                c.ok(labels_match(sel, target["spec"]["template"]["metadata"]["labels"]) and eps[0]["port"] == "admin",
                     f"{name}: PodMonitor {pm['metadata']['name']} scrapes the {comp}'s admin port")
        for r in by_kind.get("RabbitmqCluster", []):
            c.ok(r["spec"].get("replicas") == 3, f"{name}: RabbitmqCluster {r['metadata']['name']} has 3 replicas")

    Path(args.crs_out).write_text(json.dumps(crs))
    Path(args.rmq_out).mkdir(parents=True, exist_ok=True)
    for i, r in enumerate(rmq):
        (Path(args.rmq_out) / f"rabbitmqcluster-{i}.json").write_text(json.dumps(r))
    c.ok(any(x["resource"]["kind"] == "ScaledObject" for x in crs), "KEDA custom resources collected for schema validation")
    c.ok(bool(rmq), "RabbitmqCluster collected for schema validation")
    return c.done()


# --------------------------------------------------------------------------------------------------
# Prometheus rules, tests, docs
# --------------------------------------------------------------------------------------------------
def load_rules() -> tuple[list[dict], list[dict]]:
    alerts, records = [], []
    for f in sorted(RULES_DIR.glob("*.yml")):
        for group in yaml.safe_load(f.read_text())["groups"]:
            for rule in group["rules"]:
                rule["_file"] = f.name
                (alerts if "alert" in rule else records).append(rule)
    return alerts, records


def github_anchor(heading: str) -> str:
    a = heading.strip().lower()
    a = re.sub(r"[^\w\- ]", "", a)
    return a.replace(" ", "-")


def cmd_rules(args) -> int:
    c = Checker("alerts")
    alerts, records = load_rules()
    c.ok(len(alerts) > 0 and len(records) > 0, f"{len(alerts)} alerts and {len(records)} recording rules")
    tested: dict[str, int] = {}
    silent: set[str] = set()
    for f in sorted(TESTS_DIR.glob("*.yml")):
        for t in yaml.safe_load(f.read_text())["tests"]:
            for a in t.get("alert_rule_test", []):
                if a.get("exp_alerts"):
                    tested[a["alertname"]] = tested.get(a["alertname"], 0) + 1
                else:
                    silent.add(a["alertname"])
    docs = OPERATIONS.read_text() if OPERATIONS.exists() else ""
    anchors = {github_anchor(h) for h in re.findall(r"^#+\s+(.+)$", docs, re.M)}
    required = {
        "dead-letter queue not empty": "ClerkSyncDeadLetterQueueNotEmpty",
        "end-to-end lag above a threshold": "ClerkSyncEndToEndLagHigh",
        "gateway 5xx rate": "ClerkSyncGateway5xxRate",
        "gateway 503 rate": "ClerkSyncGatewayUnavailable",
        "verification failures spike": "ClerkSyncVerificationFailuresSpike",
        "worker not consuming": "ClerkSyncNoWorkerConsuming",
        "broker down": "ClerkSyncRabbitMQDown",
        "database down": "ClerkSyncDatabaseDown",
    }
    names = {a["alert"] for a in alerts}
    for what, alert in required.items():
        c.ok(alert in names, f"an alert for {what} ({alert})")
    for a in alerts:
        n = a["alert"]
        c.ok(len([x for x in alerts if x["alert"] == n]) == 1, f"{n}: unique name")
        c.ok(a.get("labels", {}).get("severity") in ("warning", "critical"), f"{n}: severity warning|critical")
        ann = a.get("annotations", {})
        c.ok(all(ann.get(k) for k in ("summary", "description", "runbook_url")), f"{n}: summary, description, runbook_url")
        anchor = ann.get("runbook_url", "").rsplit("#", 1)[-1]
        c.ok(ann.get("runbook_url", "").split("#")[0].endswith("docs/operations.md") and anchor in anchors,
             f"{n}: runbook section #{anchor} exists in docs/operations.md")
        c.ok(tested.get(n, 0) > 0, f"{n}: a promtool test expects it to fire")
        c.ok(n in silent, f"{n}: a promtool test expects it not to fire (pending, or a look-alike)")
    for r in records:
        c.ok(re.fullmatch(r"[a-z_]+:[a-z0-9_]+:[a-z0-9_]+", r["record"]) is not None,
             f"recording rule {r['record']} is named level:metric:operations")
    return c.done()


# --------------------------------------------------------------------------------------------------
# Grafana dashboard
# --------------------------------------------------------------------------------------------------
def dashboard_panels(d: dict) -> list[dict]:
    out = []
    for p in d.get("panels", []):
        out.append(p)
        out.extend(p.get("panels", []))
    return out


GRAFANA_RANGE_VARS = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}


def grafana_expr_to_promql(expr: str, variables: dict[str, str]) -> str:
    def sub(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        if name in GRAFANA_RANGE_VARS:
            return GRAFANA_RANGE_VARS[name]
        return variables.get(name, "x")

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", sub, expr)


def dashboard_exprs() -> list[tuple[str, str, str]]:
    out = []
    for f in sorted(DASHBOARD_DIR.glob("*.json")):
        d = json.loads(f.read_text())
        variables = {}
        for v in d.get("templating", {}).get("list", []):
            cur = (v.get("current") or {}).get("value") or v.get("query") or "x"
            variables[v["name"]] = cur if isinstance(cur, str) else "x"
        for p in dashboard_panels(d):
            for t in p.get("targets", []):
                if t.get("expr"):
                    out.append((f"{f.name}: {p.get('title')}", t["expr"], grafana_expr_to_promql(t["expr"], variables)))
    return out


def cmd_dashboard(args) -> int:
    import promql_parser

    c = Checker("dashboard")
    for f in sorted(DASHBOARD_DIR.glob("*.json")):
        d = json.loads(f.read_text())
        c.ok(d.get("uid") == "clerk-sync" and d.get("title"), f"{f.name}: uid and title")
        vars_ = {v["name"]: v for v in d.get("templating", {}).get("list", [])}
        c.ok(vars_.get("datasource", {}).get("type") == "datasource", f"{f.name}: data source is a variable (portable import)")
        panels = [p for p in dashboard_panels(d) if p.get("type") != "row"]
        ids = [p["id"] for p in dashboard_panels(d)]
        c.ok(len(ids) == len(set(ids)), f"{f.name}: panel ids are unique")
        for p in panels:
            c.ok(bool(p.get("targets")) and all(t.get("expr") for t in p["targets"]), f"{f.name}: '{p['title']}' has queries")
            c.ok(p.get("datasource", {}).get("uid") == "${datasource}", f"{f.name}: '{p['title']}' uses the data source variable")
            g = p.get("gridPos", {})
            c.ok(all(k in g for k in "hwxy") and g["x"] + g["w"] <= 24, f"{f.name}: '{p['title']}' fits the grid")
        text = " ".join(p.get("title", "") + " " + " ".join(t.get("expr", "") for t in p.get("targets", [])) for p in panels)
        for what, needle in (("ingest rate", "clerk_sync_gateway_requests_total"), ("outcomes", "by (outcome"),
                             ("latency percentiles", "histogram_quantile(0.99"), ("lag", "end_to_end_lag"),
                             ("retries", 'outcome="retried"'), ("dead letters", 'outcome="dead_lettered"'),
                             ("queue depth", "rabbitmq_detailed_queue_messages"), ("pool usage", "db_pool")):
            c.ok(needle in text, f"{f.name}: shows {what}")
    for where, raw, expr in dashboard_exprs():
        try:
            promql_parser.parse(expr)
            ok, err = True, ""
        except Exception as e:  # noqa: BLE001
            ok, err = False, f"{e} in {raw}"
        c.ok(ok, f"{where}: query parses", err)
    prov = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    c.ok(prov["datasources"][0]["type"] == "prometheus" and prov["datasources"][0]["url"] == "http://prometheus:9090",
         "provisioned data source points at the compose Prometheus")
    return c.done()


# --------------------------------------------------------------------------------------------------
# Metric names: used by alerts and dashboard vs exported by the running binaries
# --------------------------------------------------------------------------------------------------
def selector_names(expr: str) -> set[str]:
    import promql_parser as pp

    names: set[str] = set()

    def visit(node):
        if isinstance(node, pp.VectorSelector):
            if node.name:
                names.add(node.name)
            else:
                for m in node.matchers.matchers:
                    if m.name == "__name__":
                        names.add(m.value)
        return True

    pp.walk(pp.parse(expr), visit)
    return names


def used_metrics() -> tuple[dict[str, set[str]], set[str]]:
    """Metric name -> where it is used; plus the names recording rules define."""
    alerts, records = load_rules()
    used: dict[str, set[str]] = {}
    for r in alerts + records:
        for n in selector_names(r["expr"]):
            used.setdefault(n, set()).add(f"{r['_file']}:{r.get('alert') or r.get('record')}")
    for where, _raw, expr in dashboard_exprs():
        for n in selector_names(expr):
            used.setdefault(n, set()).add(where)
    return used, {r["record"] for r in records}


def exported_families(text: str) -> dict[str, str]:
    fams = {}
    for line in text.splitlines():
        m = re.match(r"# TYPE (\S+) (\S+)", line)
        if m:
            fams[m.group(1)] = m.group(2)
    return fams


def cmd_metrics(args) -> int:
    c = Checker("metrics")
    exported: dict[str, tuple[str, str]] = {}
    for label, path in (("gateway", args.gateway), ("worker", args.worker)):
        fams = exported_families(Path(path).read_text())
        c.ok(bool(fams), f"the {label} exports metric families ({len(fams)})")
        for name, typ in fams.items():
            exported[name] = (typ, label)
    series_names: dict[str, str] = {}
    for fam, (typ, label) in exported.items():
        series_names[fam] = label
        if typ == "histogram":
            for s in ("_bucket", "_sum", "_count"):
                series_names[fam + s] = label
        elif typ == "summary":
            for s in ("_sum", "_count"):
                series_names[fam + s] = label
    external = set(args.external.split())
    used, recorded = used_metrics()
    for name in sorted(used):
        where = ", ".join(sorted(used[name])[:3]) + (" ..." if len(used[name]) > 3 else "")
        if name in recorded:
            c.ok(True, f"{name}: a recording rule defines it")
        elif name in series_names:
            c.ok(True, f"{name}: exported by the {series_names[name]}")
        elif name in external:
            c.ok(True, f"{name}: external (listed in scripts/test-deploy.sh)")
        else:
            c.ok(False, f"{name}: used by {where}", "exported by neither the gateway nor the worker, and not listed as external")
    for name in sorted(external):
        c.ok(name in used, f"external {name} is still used (keep the list honest)")
    unused = sorted(f for f in exported if not any(u == f or u.startswith(f + "_") for u in used))
    if unused:
        print("  note: exported but used by no alert or panel: " + ", ".join(unused))
    return c.done()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("compose")
    p.add_argument("--resolved", required=True, help="output of `docker-compose config`")
    p.add_argument("--env-out", required=True)
    p = sub.add_parser("k8s")
    p.add_argument("rendered", nargs="+", help="rendered kustomizations (one multi-document YAML each)")
    p.add_argument("--env-out", required=True)
    p.add_argument("--crs-out", required=True)
    p.add_argument("--rmq-out", required=True)
    p.add_argument("--collect-only", action="store_true",
                   help="only collect the custom resources (for manifests that could not be rendered)")
    sub.add_parser("rules")
    sub.add_parser("dashboard")
    p = sub.add_parser("metrics")
    p.add_argument("--gateway", required=True)
    p.add_argument("--worker", required=True)
    p.add_argument("--external", default="")
    sub.add_parser("used-metrics")
    args = ap.parse_args()
    if args.cmd == "used-metrics":
        used, _ = used_metrics()
        for n in sorted(used):
            print(n)
        return 0
    return {"compose": cmd_compose, "k8s": cmd_k8s, "rules": cmd_rules, "dashboard": cmd_dashboard,
            "metrics": cmd_metrics}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
