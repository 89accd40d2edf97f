"""``pans verify DIR [--repair]``: check a results folder's invariants (each model exactly once, ...)."""

from __future__ import annotations

import argparse

from pipeline.commands import command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", help="results folder")
    parser.add_argument(
        "--repair",
        action="store_true",
        help="move whatever breaks an invariant into DIR/quarantine/ (never deletes); a rerun redoes models taken out",
    )


@command("verify", help="check a results folder: every model once, counts consistent, every file readable")
def run(args: argparse.Namespace) -> int:
    from pipeline.store import ResultStore, is_results_folder
    from pipeline.verify import render, repair, verify

    if not args.repair:
        report = verify(args.dir)
        from pipeline.folder_lock import describe, holder, is_locked_by_other

        if is_locked_by_other(report.root):
            report.notes.insert(0, f"being written by {describe(holder(report.root))}: models in progress may "
                                "show as orphans")
        print(render(report), end="")
        return 0 if report.ok else 1
    verify(args.dir)  # not a results folder: the one-line error, before taking any lock
    store = ResultStore(args.dir)
    assert is_results_folder(store.root)
    with store.writing("verify --repair"):
        report = verify(store.root)
        if report.ok:
            print(render(report), end="")
            return 0
        repair(report)
        print(render(report), end="")
        # Taking out a broken models file leaves that model's other rows orphaned: one more pass each.
        for _ in range(3):
            after = verify(store.root)
            if after.ok:
                break
            repair(after)
    if not after.ok:
        print(render(after), end="")
        return 1
    print("verify after repair: OK")
    return 0
