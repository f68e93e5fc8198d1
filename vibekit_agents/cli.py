"""`vibekit-synthesize SCENARIO_DIR`: build and tune a serving stack for one scenario.

    vibekit-synthesize scenarios/code-edit                       # offline, the default
    vibekit-synthesize scenarios/code-edit --planner claude      # needs ANTHROPIC_API_KEY
    vibekit-synthesize scenarios/code-edit --seeds 5             # the whole search 5 times
    vibekit-synthesize --init my-scenario                        # write a scenario skeleton
    vibekit-synthesize --list

The output folder (--out) holds best_plan.toml, server.py, report.md, progress.svg and the
workspace (a git repository: one commit per accepted round, MEMORY.md, BACKLOG.md). Running
the same command again with the same --out resumes after the last completed round.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _list() -> int:
    from vibekit_agents.scenario import list_scenarios

    rows = list_scenarios()
    if not rows:
        print("no scenarios found (looked in ./scenarios and the repository's scenarios/)")
        return 0
    for folder, sc, status in rows:
        if sc is None:
            print(f"  {folder.name:<16} {status}   [{folder}]")
        else:
            print(f"  {sc.name:<16} {sc.metric.label}; model {sc.model.source}; "
                  f"{sc.workload.num_requests} requests at concurrency "
                  f"{list(sc.workload.concurrency)} - {status}   [{folder}]")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="vibekit-synthesize", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenario", nargs="?", help="a scenario folder (with scenario.toml)")
    ap.add_argument("--list", action="store_true", help="list the scenarios and exit")
    ap.add_argument("--init", metavar="DIR", help="write a scenario skeleton into DIR and exit")
    ap.add_argument("--quick", action="store_true",
                    help="run on a cut-down copy of the scenario ([quick] in scenario.toml): "
                         "checks it end to end in little time; the numbers mean little")
    ap.add_argument("--seeds", type=int, default=1,
                    help="run the whole search N times (out/seed-1 ... seed-N) and report the "
                         "distribution of the final speedup (default 1)")
    ap.add_argument("--planner", choices=["local", "claude"], default="local")
    ap.add_argument("--rounds", type=int, default=20, help="search rounds (default 20)")
    ap.add_argument("--budget-minutes", type=float, default=8.0,
                    help="wall-clock budget of this invocation, preparation and the final "
                         "check included (default 8)")
    ap.add_argument("--out", default=None, help="output folder (default synthesis/<scenario>)")
    ap.add_argument("--claude-model", default=os.environ.get("VIBEKIT_CLAUDE_MODEL",
                                                             "claude-sonnet-4-5"),
                    help="model for --planner claude (env VIBEKIT_CLAUDE_MODEL)")
    args = ap.parse_args(argv)
    # Keep the key out of every child process and file: read it once, drop it from the env.
    api_key = os.environ.pop("ANTHROPIC_API_KEY", None)
    if args.list:
        return _list()
    if args.init:
        from vibekit_agents.init import write_skeleton

        try:
            files = write_skeleton(args.init)
        except FileExistsError as exc:
            print(f"vibekit-synthesize: {exc}", file=sys.stderr)
            return 2
        print(f"wrote {', '.join(f.name for f in files)} in {args.init}; try "
              f"`vibekit-synthesize {args.init} --rounds 1`")
        return 0
    if not args.scenario:
        ap.error("give a scenario folder, or --list")
    if args.rounds < 0 or args.budget_minutes <= 0 or args.seeds < 1:
        ap.error("--rounds must be >= 0, --budget-minutes > 0 and --seeds >= 1")

    from vibekit_agents.loop import SynthesisError, Synthesizer
    from vibekit_agents.scenario import ScenarioError, load_scenario

    try:
        scenario = load_scenario(args.scenario)
        out = Path(args.out) if args.out else Path("synthesis") / scenario.name
        if args.quick:
            from vibekit_agents.scenario import write_quick_variant

            scenario = load_scenario(write_quick_variant(scenario, out.parent / (
                out.name + "-quick-scenario")))
    except ScenarioError as exc:
        print(f"vibekit-synthesize: {exc}", file=sys.stderr)
        return 2
    if args.planner == "claude":
        if not api_key:
            print("vibekit-synthesize: --planner claude needs ANTHROPIC_API_KEY",
                  file=sys.stderr)
            return 2
        from vibekit_agents.policies.claude import claude_policy_factory

        factory = claude_policy_factory(api_key, args.claude_model,
                                        base_url=os.environ.pop("ANTHROPIC_BASE_URL", None))
    else:
        from vibekit_agents.policies.local import LocalPolicy

        factory = LocalPolicy
    print(f"vibekit-synthesize: scenario {scenario.name} ({scenario.root}), planner "
          f"{args.planner}, up to {args.rounds} rounds in {args.budget_minutes:g} min, out {out}",
          flush=True)
    try:
        if args.seeds > 1:
            from vibekit_agents.seeds import run_seeds

            summary = run_seeds(scenario, out, factory, args.seeds, rounds=args.rounds,
                                budget_s=args.budget_minutes * 60,
                                progress=lambda m: print(m, flush=True))
            print(f"{args.seeds} runs: final speedup median x{summary['median']:.2f} "
                  f"(min x{summary['min']:.2f}, max x{summary['max']:.2f}); "
                  f"report: {out / 'seeds.md'}")
            return 0
        synth = Synthesizer(scenario, out, factory, rounds=args.rounds,
                            budget_s=args.budget_minutes * 60,
                            progress=lambda m: print(m, flush=True))
        result = synth.run()
    except SynthesisError as exc:
        print(f"vibekit-synthesize: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\ninterrupted; run the same command again to resume from {out}",
              file=sys.stderr)
        return 130
    print(f"best plan: {out / 'best_plan.toml'}; server: {out / 'server.py'}; "
          f"report: {out / 'report.md'}; speedup {result['speedup_text']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
