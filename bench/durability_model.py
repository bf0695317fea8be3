#!/usr/bin/env python3
"""The durability model of docs/durability.md as a calculator, so the table
there can be reproduced and re-run with other inputs:

    python3 bench/durability_model.py [REPAIR_MBPS]

Independent node failures at an annual rate AFR; each node holds D bytes in
4R chain memberships; a failed node's chains are refilled in T = D / repair
rate hours. Data is lost when the other R-1 members of one of its chains
fail before that chain is refilled.
"""
import math
import sys

HOURS_PER_YEAR = 8766


def model(r, n_nodes, d_bytes, afr, repair_bytes_per_s, chains_per_node=4):
    lam = afr / HOURS_PER_YEAR                     # failures per node-hour
    t = d_bytes / repair_bytes_per_s / 3600        # hours to refill
    memberships = chains_per_node * r              # chains a node belongs to
    # P(a failure loses some chain): one of its chains loses its R-1 other
    # members within the window (first order in lam*t).
    p_loss_given_failure = memberships * (lam * t) ** (r - 1)
    failures_per_year = n_nodes * afr
    p_any_loss = failures_per_year * p_loss_given_failure
    # The share of all data one chain holds.
    chain_share = (d_bytes / memberships) / (n_nodes * d_bytes / r)
    p_object = p_any_loss * chain_share
    return t, p_any_loss, p_object


def nines(p):
    return -math.log10(p) if p > 0 else float("inf")


def main():
    measured = float(sys.argv[1]) if len(sys.argv) > 1 else 53.0
    print("| R | repair rate | T (h) | P(any loss)/yr | nines (any) | P(object)/yr | nines (object) |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for r in (2, 3):
        for label, rate in ((f"{measured:.0f} MB/s (measured, one stream)", measured * 1e6),
                            ("4R heads × 100 MB/s (configured cap)", 4 * r * 100e6)):
            t, any_loss, obj = model(r, 100, 10e12, 0.02, rate)
            print(f"| {r} | {label} | {t:.1f} | {any_loss:.1e} | {nines(any_loss):.1f} | "
                  f"{obj:.1e} | {nines(obj):.1f} |")


if __name__ == "__main__":
    main()
