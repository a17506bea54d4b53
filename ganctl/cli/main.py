"""`ganctl <command> [hydra args]`: one console script whose subcommands are Hydra apps, so
overrides, -m, --cfg, --help, hydra.run.dir=... and shell completion all keep working.

    ganctl train model=cdcgan loss=wgan_gp
    ganctl train -m optimizer.lr_g=1e-4,2e-4 loss=bce,lsgan
    ganctl sample label=5 n=64 out=fives.png
"""
import contextlib
import os
import re
import sys
from pathlib import Path

from ganctl.errors import fail

USAGE = """usage: ganctl <command> [overrides] [hydra options]

commands:
  train    train a GAN (ganctl train --help lists the config groups)
  sample   draw images from a trained generator (ganctl sample --help)
  eval     FID, KID, IS, precision/recall, label accuracy of a trained generator
  summary  G and D as layer tables: shapes, parameters, multiply-adds (ganctl summary --help)
  fit-classifier  train and cache the feature classifier that eval uses
  export   the generator as one file that needs no ganctl (torch.export .pt2 or ONNX)

examples:
  ganctl train model=cdcgan loss=wgan_gp
  ganctl train -m optimizer.lr_g=1e-4,2e-4 loss=bce,lsgan
  ganctl sample label=5 n=64 out=fives.png
  ganctl eval ckpt=outputs/<day>/<run> n=10000
  ganctl summary model=cdcgan dataset=cifar10
  ganctl export ckpt=outputs/<day>/<run> format=onnx
"""


def _hydra_argv(args: list[str]) -> list[str]:
    """Hydra 1.3 wants -m/--multirun before the overrides."""
    flags = [a for a in args if a in ("-m", "--multirun")]
    return flags + [a for a in args if a not in ("-m", "--multirun")]


def hydra_quote(value: str) -> str:
    """`value` as one quoted string of Hydra's override grammar: any path, also one holding
    parentheses, commas, '=', quotes, non-ASCII letters or '${'."""
    value = re.sub(r"(\\*)('|$)", lambda m: m.group(1) * 2 + ("\\'" if m.group(2) else ""), value)
    return "'" + value.replace("${", "\\${") + "'"


# Keys whose values are paths (and sample's arithmetic=[3,4]-[5]): quoted for Hydra where they hold
# characters its grammar reads as syntax, so `ckpt=runs/a(1)` works as typed. Not in a sweep,
# where a comma separates values.
PATH_KEYS = ("ckpt", "out", "outputs", "resume", "hydra.run.dir", "dataset.root", "eval.inception_weights",
             "arithmetic")
PLAIN_PATH = re.compile(r"[\w./~:+@-]*", re.ASCII)


def _plain_run_dir_keys(args: list[str]) -> list[str]:
    """`+hydra.run.dir=` and `++hydra.run.dir=` (and the sweep's) name the key that always exists:
    the same as `hydra.run.dir=`, so that every check sees the directory however it is named."""
    return [a.lstrip("+") if re.match(r"\+{1,2}hydra\.(run|sweep)\.", a) else a for a in args]


def _quote_paths(args: list[str]) -> list[str]:
    if "-m" in args or "--multirun" in args:
        return args
    out = []
    for a in args:
        key, eq, value = a.partition("=")
        plain = PLAIN_PATH.fullmatch(value) and key != "arithmetic"  # an expression, never a number
        if eq and key.lstrip("+") in PATH_KEYS and not plain and value[:1] not in "'\"":
            a = f"{key}={hydra_quote(value)}"
        out.append(a)
    return out


def _one_line(e: BaseException) -> str:
    """Hydra's multi-line composition errors (and their causes) as one line."""
    parts = []
    while e is not None:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        lines = [line for line in lines if not line.startswith(("full_key:", "object_type=", "reference_type="))]
        if "Config search path:" in lines:  # Hydra's debugging aid, not the user's problem
            lines = lines[:lines.index("Config search path:")]
        text, text_is_list = "", False
        for line in lines:  # "Available options in 'model':" then one option a line
            text += (" " if not text or text.endswith((":", ".")) else ", " if text_is_list else ". ") + line
            text_is_list = line.endswith(":") or text_is_list
        if text.strip() and text.strip() not in parts:
            parts.append(text.strip())
        e = e.__cause__
    return ": ".join(parts)


def _sweep_jobs(args: list[str]) -> list[list[str]]:
    """The overrides of every job of a basic sweep (`-m a=1,2 b=x,y`: four jobs), as Hydra's basic
    sweeper will expand them; [] where another sweeper (search=..., hydra/sweeper=...) decides."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    overrides = [a for a in args if not a.startswith("-")]
    if any(a.split("=")[0].lstrip("+") in ("search", "hydra/sweeper") for a in overrides):
        return []
    parsed = OverridesParser.create().parse_overrides(overrides)
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


CONFIG_NAMES = {"train": "train", "sample": "sample", "eval": "eval", "fit-classifier": "fit_classifier",
                "summary": "summary", "export": "export"}


def _flat_keys(node, prefix: str = "") -> list[str]:
    """Every key path of a config, `a.b.c`, without resolving interpolations."""
    from omegaconf import DictConfig
    keys = []
    for k in node.keys() if isinstance(node, DictConfig) else []:
        path = f"{prefix}{k}"
        keys.append(path)
        child = node._get_node(k)
        if isinstance(child, DictConfig):
            keys += _flat_keys(child, f"{path}.")
    return keys


def _unknown_keys(cfg, parsed) -> list[str]:
    """`key=value: no such key; did you mean ...?` for each override of a key the config lacks,
    with `+`/`++` too (Hydra would add such a key silently, and the typo would change nothing)."""
    known = _flat_keys(cfg)
    groups = _group_names()
    errors = []
    for o in parsed:
        key = o.key_or_group
        if o.is_delete() or key.startswith("hydra") or "/" in key or o.package is not None or key in groups:
            continue  # a config group (model=...): Hydra lists its options itself
        if key not in known:
            errors.append(f"{o.input_line}: no such key{_nearest(key, known)}")
    return errors


def _nearest(key: str, known: list[str]) -> str:
    """A hint for an unknown key: the nearest key beside it (same node, a close name), else what
    that node holds (`model.G.upsample` under model=resnet: model.G has ch), else the nearest key
    anywhere (a misspelt node: `trainr.seed`)."""
    import difflib
    parent, _, leaf = key.rpartition(".")
    siblings = {k.rpartition(".")[2]: k for k in known if k.rpartition(".")[0] == parent and not
                k.rpartition(".")[2].startswith("_")}
    near = difflib.get_close_matches(leaf, list(siblings), n=1, cutoff=0.6)
    if near:
        return f"; did you mean {siblings[near[0]]}?"
    if parent in known and siblings:
        return f"; {parent} has {', '.join(sorted(siblings))}"
    near = difflib.get_close_matches(key, known, n=1, cutoff=0.6) if parent not in known else []
    return f"; did you mean {near[0]}?" if near else ""


def _group_names() -> set[str]:
    import importlib.resources
    return {d.name for d in importlib.resources.files("ganctl.conf").iterdir() if d.is_dir()}


def _refuse_unknown_keys(command: str, parsed: list) -> None:
    """One line for overrides of keys that the command's config (with the chosen groups) lacks."""
    from hydra import compose
    groups = [o.input_line for o in parsed if o.key_or_group in _group_names() and o.package is None
              and not (o.is_add() or o.is_force_add() or o.is_delete())]
    unknown = _unknown_keys(compose(CONFIG_NAMES[command], overrides=groups), parsed)
    if unknown:
        fail("; ".join(unknown))


def _refuse_node_into_null(command: str, e: BaseException, parsed: list) -> None:
    """One line for `augment.ada={target:0.6}` where the chosen option leaves augment.ada null:
    OmegaConf cannot merge a node into null (its error: 'NoneType' object has no attribute 'get').
    Names the group's options that set the key, whose keys can then be overridden one by one."""
    from hydra import compose
    from omegaconf import OmegaConf

    from ganctl.cli.registry import options
    while e is not None and not (isinstance(e, AttributeError) and "full_key: " in str(e)):
        e = e.__cause__ or e.__context__
    if e is None:
        return
    key = str(e).split("full_key: ", 1)[1].split()[0]
    given = next((o.input_line for o in parsed if o.key_or_group == key), key)
    group = key.split(".")[0]
    setters = [option for option in options(group) if group in _group_names()
               and OmegaConf.select(compose(CONFIG_NAMES[command], overrides=[f"{group}={option}"]), key) is not None]
    way = (f"choose {' or '.join(f'{group}={o}' for o in setters)}, which sets it, then override its keys one "
           f"by one ({key}.<name>=...)" if setters else "it cannot take a node whole")
    fail(f"{given}: {key} is null in this config; {way}")


def _refuse_ignored(command: str, parsed: list, cfg) -> None:
    """One line for options given together where one would silently do nothing."""
    given = {o.key_or_group.lstrip("+"): o for o in parsed if not o.is_delete()}
    if command == "summary" and cfg.ckpt is not None:
        ignored = [o.input_line for key, o in given.items() if key not in ("ckpt", "depth")]
        if ignored:
            fail(f"summary ckpt=... shows the nets the run saved, so {' '.join(ignored)} would be ignored; drop "
                 f"{'it' if len(ignored) == 1 else 'them'}, or drop ckpt= to see the composed config")
    if command == "sample":
        from ganctl.commands.sample import interpolating
        if cfg.arithmetic is not None and interpolating(cfg.interpolate):
            fail("arithmetic= and interpolate= draw different pictures; give one of them")
        walk = [given[k].input_line for k in ("steps", "spherical") if k in given]
        if walk and not interpolating(cfg.interpolate):
            fail(f"{' and '.join(walk)} {'shapes' if len(walk) == 1 else 'shape'} an interpolation only; add "
                 f"interpolate=z (or interpolate=label)")
    policy = given.get("augment.policy")
    augment = given.get("augment")
    if policy is not None and policy.value() == [] and augment is not None and augment.value() != "none":
        fail(f"augment.policy=[] with augment={augment.value()} turns augmentation off; use augment=none")


@contextlib.contextmanager
def _conf():
    """Where Hydra's compose() reads ganctl's conf/, with ganctl's schemas and resolvers registered."""
    from hydra import initialize_config_module

    from ganctl.cli import registry
    registry.register()
    with initialize_config_module("ganctl.conf", version_base="1.3"):
        yield


def _check_config(command: str, args: list[str]) -> None:
    """Compose the command's config as Hydra will and check its keys and ranges first, so a
    mistake costs one line and leaves nothing behind (Hydra's own errors span lines). A sweep's
    jobs are composed one by one (a typo in any refuses the sweep); their ranges are checked by
    each job, so that one bad value fails its job only and the sweep goes on."""
    multirun = "-m" in args or "--multirun" in args
    if any(a.startswith("-") and a not in ("-m", "--multirun") for a in args):
        return  # --cfg, --info ...: Hydra's own business
    from hydra import compose
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from ganctl.config import ranges
    try:
        jobs = _sweep_jobs(args) if multirun else [args]
        with _conf():
            for job in jobs:
                job = [a for a in job if not a.lstrip("+~").startswith("hydra") and not a.startswith("-")]
                parsed = OverridesParser.create().parse_overrides(job)
                # Hydra refuses a plain override of a missing key itself (in many lines), but
                # adds a `+key` silently: the config without the overrides names the known keys.
                # Composing costs ~0.1 s, so that second composition happens only when needed.
                if any(o.is_add() or o.is_force_add() for o in parsed):
                    _refuse_unknown_keys(command, parsed)
                try:
                    cfg = compose(CONFIG_NAMES[command], overrides=job)
                except Exception as e:
                    _refuse_unknown_keys(command, parsed)
                    _refuse_node_into_null(command, e, parsed)
                    raise
                errors = [] if multirun else ranges.range_errors(cfg)
                if errors:
                    fail("; ".join(errors))
                _refuse_ignored(command, parsed, cfg)
    except SystemExit:
        raise
    except Exception as e:
        fail(_one_line(e))


def _help(command: str, args: list[str]) -> None:
    """`ganctl <command> --help`, printed from the composed config: Hydra's own help also lists
    every option of every config group first, which takes seconds."""
    from hydra import compose
    from omegaconf import OmegaConf, open_dict

    overrides = [a for a in args if not a.startswith("-") and not a.lstrip("+").startswith("hydra")]
    try:
        with _conf():
            cfg = compose(CONFIG_NAMES[command], overrides=overrides, return_hydra_config=True)
    except Exception as e:
        fail(_one_line(e))
    template = cfg.hydra.help.template
    with open_dict(cfg):
        del cfg["hydra"]
    print(template.replace("$CONFIG", OmegaConf.to_yaml(cfg)))


def _saved_overrides(run_dir: Path) -> list[str]:
    """The overrides a run was started with (its .hydra/overrides.yaml), to replay on resume. The
    file may come from anyone: an override that names a `_`-key (`_target_`, `_args_`, ...), in
    its key or inside its value, could make Hydra run code, and is refused."""
    from ganctl.config.build import private_keys
    saved = run_dir / ".hydra" / "overrides.yaml"
    if not saved.is_file():
        return []
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser
        from omegaconf import OmegaConf
        items = OmegaConf.to_container(OmegaConf.load(saved))
        if not isinstance(items, list) or not all(isinstance(o, str) for o in items):
            raise ValueError("not a list of key=value strings")
        parsed = OverridesParser.create().parse_overrides(items)
    except Exception as e:
        fail(f"{saved} is not a run's list of overrides ({_one_line(e)}); nothing was resumed")
    kept = []
    for text, o in zip(items, parsed):
        names = re.split(r"[./@]", f"{o.key_or_group}@{o.package or ''}")
        value = None if o.is_sweep_override() else o.value()
        if o.is_sweep_override() or any(n.startswith("_") for n in names) or private_keys(value, ""):
            fail(f"{saved}: refusing to replay {text!r}: a run's saved overrides may not name keys "
                  f"starting with '_' or sweep (they could make Hydra run code); nothing was resumed")
        if interpolations(value):
            fail(f"{saved}: refusing to replay {text!r}: a run's saved overrides are data, and ${{...}} would be "
                  f"resolved (reading the environment, say); give the value on the command line; nothing was resumed")
        if names[0] not in ("hydra", "resume") and "hydra" not in names:
            kept.append(text)
    return kept


# `${` that OmegaConf reads as an interpolation: not escaped by a backslash (`\${` is literal).
INTERPOLATION = re.compile(r"(?<!\\)(?:\\\\)*\$\{")


def interpolations(value) -> bool:
    """Whether a parsed override value (a string, or lists and dicts of them) holds an interpolation."""
    if isinstance(value, str):
        return bool(INTERPOLATION.search(value))
    if isinstance(value, dict):
        return any(interpolations(k) or interpolations(v) for k, v in value.items())
    return isinstance(value, list) and any(interpolations(v) for v in value)


def _resume_args(args: list[str]) -> list[str]:
    """`resume=<run dir>` or `resume=true` (newest run): rerun Hydra in that directory with the
    run's own overrides first, so the user repeats none of them; new ones (trainer.max_steps=...)
    come after and win."""
    values = [a.split("=", 1)[1] for a in args if a.startswith("resume=")]
    if not values or values[-1].lower() in ("null", "none", "false"):
        return args
    from ganctl.run.directory import newest_run
    if "-m" in args or "--multirun" in args:
        fail("resume= continues one run and cannot be combined with -m")
    if any(a.lstrip("+").startswith("hydra.run.dir=") for a in args):
        fail("resume= already names the run directory; drop hydra.run.dir=")
    value = values[-1].strip("'\"") if values[-1][:1] in "'\"" and values[-1][-1:] == values[-1][:1] else values[-1]
    run_dir = newest_run(Path("outputs")) if value.lower() == "true" else Path(value).expanduser()
    if not (run_dir / "checkpoints" / "last.pt").is_file():
        fail(f"resume={value}: no checkpoints/last.pt in {run_dir.resolve()}")
    original = _saved_overrides(run_dir)
    rest = [a for a in args if not a.startswith("resume=")]
    kept = _kept_values(run_dir / "checkpoints" / "last.pt", original, rest)
    run_dir = hydra_quote(str(run_dir.resolve()))
    return [*original, *kept, *rest, f"resume={run_dir}", f"hydra.run.dir={run_dir}"]


# What a run learns: resume keeps the saved value of these keys where today's default differs,
# unless the command line names the key or its group. Keys of the machine it runs on follow it.
RUN_KEYS = ("model.", "loss.", "optimizer.", "augment.", "dataset.", "trainer.batch_size", "trainer.seed",
            "trainer.noise", "trainer.label_smoothing", "trainer.ema_")
MACHINE_KEYS = ("dataset.root", "dataset.download", "dataset.num_workers", "dataset.cache", "optimizer.fused")


def _kept_values(checkpoint: Path, original: list[str], rest: list[str]) -> list[str]:
    """`key=value` overrides that hold the run's saved values where a default has changed since it
    was trained (model.clusters: 0 then, 30 now), so that it goes on as it was; each is said on stderr.
    A key that follows another (`${model.lr}`) follows it; a key not plain data is left to the
    loop, which warns about it."""
    from hydra import compose
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    from ganctl.run.checkpoint import load_checkpoint
    from ganctl.training.loop import flat_items
    saved = flat_items(load_checkpoint(checkpoint)["cfg"])
    named = []
    for arg in rest:
        try:
            named += [o.key_or_group for o in OverridesParser.create().parse_overrides([arg])]
        except Exception:  # --cfg, job, ...: Hydra's flags and their values name no key
            pass
    try:
        with _conf():
            cfg = compose("train", overrides=original)
        raw = flat_items(OmegaConf.to_container(cfg, resolve=False))
        now = flat_items(OmegaConf.to_container(cfg, resolve=True))
    except Exception:  # the command line's own mistake: _check_config says it in one line
        return []
    kept = []
    for key, value in now.items():
        old = saved.get(key, value)
        if (old == value or not key.startswith(RUN_KEYS) or key.startswith(MACHINE_KEYS)
                or any(p.startswith("_") for p in key.split(".")) or interpolations(raw[key])
                or any(key == n or key.startswith(n + ".") for n in named)):
            continue
        text = _override_text(old)
        if text is not None:
            kept.append(f"{key}={text}")
            if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, once
                print(f"ganctl: resume keeps the run's {key}={text} (the default is {_override_text(value)} now)",
                      file=sys.stderr)
    return kept


def _override_text(value) -> str | None:
    """A scalar, or a list of scalars, in Hydra's override grammar; None for anything else."""
    if isinstance(value, list):
        items = [_override_text(v) for v in value]
        return None if any(i is None or isinstance(v, list) for i, v in zip(items, value)) else f"[{','.join(items)}]"
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, (int, float)):
        return repr(value)
    return hydra_quote(value) if isinstance(value, str) else None


def _torchrun_args(args: list[str]) -> list[str]:
    """Under torchrun every rank runs this command: a sweep would run on every rank, so -m is
    refused; ranks other than 0 write no log file into the shared run dir."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return args
    if "-m" in args or "--multirun" in args:
        fail("torchrun runs one training on many processes and cannot run a sweep (-m): every "
              "rank would run all of its jobs; sweep with ganctl train -m and a launcher instead")
    if int(os.environ.get("RANK", "0")) == 0:
        return args
    return [*args, "hydra/job_logging=stdout"]


def main(argv: list[str] | None = None) -> None:
    """The console script. Ctrl-C before training starts (imports, config, data) is one line too."""
    try:
        _main(list(sys.argv[1:] if argv is None else argv))
    except KeyboardInterrupt:
        print("ganctl: interrupted", file=sys.stderr)
        raise SystemExit(130) from None


def _main(args: list[str]) -> None:
    if "-sc" in args or "--shell-completion" in args:
        return _complete(args)
    if args[:1] in (["--version"], ["-V"]):
        from ganctl import __version__
        print(f"ganctl {__version__}")
        return
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return
    command, rest = args[0], _plain_run_dir_keys(args[1:])
    if command not in COMMAND_NAMES:
        fail(f"unknown command {command!r}; choose from {', '.join(COMMAND_NAMES)} (ganctl --help)")
    if "--help" in rest or "-h" in rest:
        return _help(command, rest)
    if command == "train":
        try:
            rest = _resume_args(rest)
        except Exception as e:  # no runs to resume
            from ganctl.errors import UserError
            if not isinstance(e, UserError):
                raise
            fail(str(e))
        rest = _torchrun_args(rest)
    rest = _quote_paths(rest)
    _check_config(command, rest)
    from ganctl.cli import apps
    from ganctl.run import directory
    from ganctl.cli import sweep
    apps.failed_jobs.clear()
    sweep.failed_jobs.clear()
    apps.outputs_before = directory.folders_in(Path("outputs"))
    sys.argv = [f"{Path(sys.argv[0]).name} {command}"] + _hydra_argv(rest)
    apps.COMMANDS[command]()
    failed = sorted(set(apps.failed_jobs) | set(sweep.failed_jobs)) if command == "train" else []
    if failed:
        fail(f"{len(failed)} sweep job(s) failed ({', '.join(failed)}); each one's error is in its "
              f"result.json and in summary.md", 1)


COMMAND_NAMES = ("train", "sample", "eval", "summary", "fit-classifier", "export")


def _complete(args: list[str]) -> None:
    """Shell completion (`ganctl -sc install=bash`, then Hydra's query): the typed line is in
    COMP_LINE. The first word completes to a command; after it Hydra completes the overrides,
    with the subcommand routed and removed (Hydra would read it as an override) and the groups
    that are not chosen by hand left out."""
    import contextlib
    import io

    from ganctl.cli import apps
    from ganctl.cli import registry
    line = os.environ.get("COMP_LINE")
    if line is None:  # install=bash, uninstall=bash: Hydra prints the shell's snippet
        sys.argv = [sys.argv[0]] + [a for a in args if a not in COMMAND_NAMES]
        apps.COMMANDS["train"]()
        return
    words = line.split()
    if len(words) == 1 or (len(words) == 2 and not line.endswith(" ")):
        typed = words[1] if len(words) == 2 else ""
        print(" ".join(c for c in COMMAND_NAMES if c.startswith(typed)))
        return
    command = words[1] if words[1] in COMMAND_NAMES else "train"
    if words[1] in COMMAND_NAMES:
        os.environ["COMP_LINE"] = " ".join([words[0]] + words[2:]) + (" " if line.endswith(" ") else "")
    if args and args[0] in COMMAND_NAMES:
        args = args[1:]
    sys.argv = [sys.argv[0]] + args
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        apps.COMMANDS[command]()
    print(" ".join(w for w in out.getvalue().split() if not w.startswith(registry.NOT_CHOICES)))


if __name__ == "__main__":
    main()
