#!/usr/bin/env python3
"""Runs flytbench on the GPU stand-in and checks its outputs (not its figures).

usage: check_flytbench.py memcpy|latency|clients FLYTBENCH WORKDIR
Prints "flytbench SCENARIO: all checks passed" and exits 0, or names the first failed check and
exits 1.
"""
import csv
import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

SVG = "{http://www.w3.org/2000/svg}"
LATENCY_POINTS = ["d2h_8b", "stream_query", "launch_enqueue", "launch_sync", "malloc_free_1mib"]


class CheckFailed(Exception):
    pass


def check(condition, what):
    if not condition:
        raise CheckFailed(what)


def gpu_present():
    smi = shutil.which("nvidia-smi")
    return smi is not None and subprocess.run([smi, "-L"], capture_output=True).returncode == 0


def run(flytbench, args):
    command = [flytbench, *args]
    print("$", " ".join(command), flush=True)
    done = subprocess.run(command, capture_output=True, text=True, timeout=100)
    sys.stderr.write(done.stderr)
    check(done.returncode == 0, f"flytbench exited with {done.returncode}; stdout:\n{done.stdout}")
    return done.stdout


def check_native(doc, points):
    native = next(t for t in doc["transports"] if t["name"] == "native")
    rows = [r for r in doc["results"] if r["transport"] == "native"]
    check(len(rows) == points, f"{len(rows)} native results, expected {points}")
    if gpu_present():
        check(native["status"] == "ok", f"native did not run on a GPU host: {native['note']}")
        return
    check(native["status"] == "skipped" and "no CUDA device" in native["note"],
          f"native is not marked skipped for want of a device: {native}")
    check(all(r["status"] == "skipped" and r["gbps"] is None for r in rows), "native rows are not all skipped")


def check_copy_result(r, clients):
    where = f"{r['transport']} {r['direction']} {r['memory']} {r['bytes']}"
    check(r["status"] == "ok", f"{where}: status {r['status']} ({r['error']})")
    check(r["bytes"] > 0 and r["gbps"] is not None and r["gbps"] > 0, f"{where}: no throughput")
    check(r["verified"] is True, f"{where}: not verified")
    check(len(r["clients"]) == clients, f"{where}: {len(r['clients'])} client results, expected {clients}")
    for c in r["clients"]:
        check(c["kind"] == "result" and c["iterations"] >= 3 and c["end_ns"] > c["start_ns"],
              f"{where}: implausible client result {c}")
        check(c["verified"] is True, f"{where}: a client did not verify")
    if r["transport"] == "tcp":
        check(r["raw_socket_gbps"] and r["ratio_raw_socket"], f"{where}: no raw socket comparison")


def check_svg(path, panels, transports, sizes):
    root = ET.parse(path).getroot()
    check(root.tag == SVG + "svg", f"{path}: the root is {root.tag}, not svg")
    found = [g for g in root.iter(SVG + "g") if g.get("class") == "panel"]
    check(sorted((g.get("data-direction"), g.get("data-memory")) for g in found) == sorted(panels),
          f"{path}: panels {[(g.get('data-direction'), g.get('data-memory')) for g in found]}, expected {panels}")
    for g in found:
        lines = {p.get("data-transport"): p for p in g.iter(SVG + "polyline")}
        for transport in transports:
            check(transport in lines, f"{path}: panel {g.get('data-direction')} {g.get('data-memory')} has no {transport} line")
            check(len(lines[transport].get("points").split()) == sizes,
                  f"{path}: the {transport} line does not have {sizes} points")


def scenario_memcpy(flytbench, workdir):
    out = {k: os.path.join(workdir, f"out.{k}") for k in ("json", "csv", "svg")}
    table = run(flytbench, ["memcpy", "--executor", "standin", "--transports", "native,shm,tcp", "--sizes", "4K,1M,3M",
                            "--directions", "h2d,d2h", "--memory", "pinned,pageable", "--min-time", "0.01",
                            "--json", out["json"], "--csv", out["csv"], "--plot", out["svg"]])
    points = 3 * 2 * 2
    check("flytbench memcpy:" in table and "3 MiB" in table and "raw socket" in table, "the table is missing parts")
    with open(out["json"]) as f:
        doc = json.load(f)
    check(doc["test"] == "memcpy" and doc["node"]["endpoints"][0].startswith("shm://"), "JSON header")
    check(len(doc["raw_socket"]) == 3 and all(r["gbps"] > 0 for r in doc["raw_socket"]), "raw socket results")
    check_native(doc, points)
    for transport in ("shm", "tcp"):
        t = next(t for t in doc["transports"] if t["name"] == transport)
        check(t["status"] == "ok" and t["infos"][0]["kind"] == "info", f"{transport}: {t['note']}")
        rows = [r for r in doc["results"] if r["transport"] == transport]
        check(len(rows) == points, f"{transport}: {len(rows)} results, expected {points}")
        for r in rows:
            check_copy_result(r, 1)
    with open(out["csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    check(rows and {"transport", "bytes", "gbps", "status", "verified"} <= set(rows[0]), "CSV header")
    check(len(rows) == points * 3, f"CSV has {len(rows)} rows, expected {points * 3}")
    check(all(float(r["gbps"]) > 0 and r["verified"] == "true" for r in rows if r["transport"] != "native"),
          "CSV shm/tcp rows without throughput or verification")
    panels = [(d, m) for d in ("h2d", "d2h") for m in ("pinned", "pageable")]
    check_svg(out["svg"], panels, ["shm", "tcp"], 3)


def scenario_latency(flytbench, workdir):
    doc = json.loads(run(flytbench, ["latency", "--executor", "standin", "--transports", "shm,tcp",
                                     "--min-time", "0.01", "--json", "-"]))
    check(doc["test"] == "latency" and [t["name"] for t in doc["transports"]] == ["shm", "tcp"], "JSON header")
    for transport in ("shm", "tcp"):
        rows = [r for r in doc["results"] if r["transport"] == transport]
        check([r["point"] for r in rows] == LATENCY_POINTS, f"{transport}: points {[r['point'] for r in rows]}")
        for r in rows:
            check(r["status"] == "ok" and r["us"] > 0 and r["iterations"] >= 3,
                  f"{transport} {r['point']}: {r['status']} {r['error']} us={r['us']}")


def scenario_clients(flytbench, workdir):
    doc = json.loads(run(flytbench, ["memcpy", "--executor", "standin", "--transports", "shm", "--clients", "3",
                                     "--sizes", "1M", "--directions", "h2d,d2h", "--memory", "pinned",
                                     "--min-time", "0.01", "--json", "-"]))
    rows = doc["results"]
    check(len(rows) == 2, f"{len(rows)} results, expected 2")
    for r in rows:
        check_copy_result(r, 3)
        moved = sum(c["bytes"] * c["iterations"] for c in r["clients"])
        span = (max(c["end_ns"] for c in r["clients"]) - min(c["start_ns"] for c in r["clients"])) / 1e9
        check(abs(r["gbps"] - moved / span / 1e9) <= 1e-6 * r["gbps"], f"aggregate {r['gbps']} != {moved / span / 1e9}")


def main():
    scenario, flytbench, workdir = sys.argv[1:4]
    os.makedirs(workdir, exist_ok=True)
    try:
        {"memcpy": scenario_memcpy, "latency": scenario_latency, "clients": scenario_clients}[scenario](flytbench, workdir)
    except CheckFailed as failure:
        print(f"flytbench {scenario}: FAILED: {failure}")
        return 1
    print(f"flytbench {scenario}: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
