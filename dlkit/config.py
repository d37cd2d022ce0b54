"""Config composition: search path, Hydra overrides, validation, option listing and "did you mean".

Nothing here imports torch, so `dlkit config show` and `--help` stay fast.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from dlkit.config_types import check_types
from dlkit.errors import UsageError, did_you_mean

PRIMARY = "train"
_MIN_METRIC_WORDS = ("loss", "perplexity", "ppl", "error", "wer", "cer")


def metric_mode(metric: str) -> str:
    """'min' for losses, perplexities and error rates, 'max' for everything else."""
    name = str(metric).lower()
    return "min" if any(word in name for word in _MIN_METRIC_WORDS) else "max"


if not OmegaConf.has_resolver("metric_mode"):
    OmegaConf.register_new_resolver("metric_mode", metric_mode)


def packaged_conf_dir() -> Path:
    """The configs shipped with dlkit: inside the wheel, or `conf/` beside the package in a checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / f"{PRIMARY}.yaml").is_file():
            return candidate
    raise RuntimeError(f"dlkit's packaged configs are missing (looked in {here / 'conf'})")


def user_conf_dir(config_dir: str | Path | None) -> Path | None:
    """The user's config folder: --config-dir when given (it must exist), else ./conf when present."""
    if config_dir is not None:
        path = Path(config_dir).expanduser().resolve()
        if not path.is_dir():
            raise UsageError(f"--config-dir {config_dir}: no such folder. Create it, or drop the option.")
        return path
    local = Path.cwd() / "conf"
    if local.is_dir() and local.resolve() != packaged_conf_dir().resolve():
        return local.resolve()
    return None


def _search_path(user_dir: Path | None):
    from hydra._internal.utils import create_config_search_path

    search_path = create_config_search_path(f"file://{packaged_conf_dir()}")
    if user_dir is not None:
        # the user's folder comes first, so its configs override and extend the packaged ones
        search_path.prepend("dlkit-user", f"file://{user_dir}")
    return search_path


def _loader(user_dir: Path | None):
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    return ConfigLoaderImpl(config_search_path=_search_path(user_dir))


@dataclass(frozen=True)
class Option:
    """One option of a config group, with the first comment line of its file as description."""

    group: str
    name: str
    description: str
    path: Path


def config_groups(config_dir: str | Path | None = None) -> dict[str, list[Option]]:
    """Every group and its options, user options included (a user file shadows a packaged one)."""
    roots = [packaged_conf_dir()]
    user_dir = user_conf_dir(config_dir)
    if user_dir is not None:
        roots.append(user_dir)
    groups: dict[str, dict[str, Option]] = {}
    for root in roots:
        for file in sorted(root.rglob("*.yaml")):
            rel = file.relative_to(root)
            if len(rel.parts) < 2 or rel.parts[0].startswith("_"):  # _blocks/: shared parents, not options
                continue
            group = "/".join(rel.parts[:-1])
            groups.setdefault(group, {})[file.stem] = Option(group, file.stem, _description(file), file)
    return {g: sorted(opts.values(), key=lambda o: o.name) for g, opts in sorted(groups.items())}


def recipe_of(model: str, config_dir: str | Path | None = None) -> Option | None:
    """The recipe a model option names (`/recipe/NAME` in its defaults, or in those of the option it extends): what
    it trains with besides the model (data, task, optimizer, scheduler, trainer settings). One per model at most."""
    groups = config_groups(config_dir)
    models, recipes = {o.name: o for o in groups.get("model", [])}, {o.name: o for o in groups.get("recipe", [])}
    seen: set[str] = set()
    while model in models and model not in seen:
        seen.add(model)
        defaults = [d for d in OmegaConf.load(models[model].path).get("defaults") or [] if isinstance(d, str)]
        named = [d.rsplit("/", 1)[-1] for d in defaults if d.startswith("/recipe/")]
        if named:
            return recipes.get(named[0])
        parents = [d for d in defaults if d != "_self_" and "/" not in d]
        model = parents[0] if parents else ""
    return None


def _description(file: Path) -> str:
    for line in file.read_text(encoding="utf-8").splitlines():
        text = line.strip()
        if text.startswith("#") and not text.startswith("# @package"):
            return text.lstrip("# ").strip()
        if text and not text.startswith("#"):
            break
    return ""


# keys whose value may name a run by its id, which can be all digits
RUN_REFERENCES = ("resume", "model.pretrained")


def normalize(overrides: list[str] | tuple[str, ...], config_dir: str | Path | None = None) -> list[str]:
    """Quote numeric group choices (`precision=16` means the option named "16", not the number) and numeric run
    ids (`resume=124013`)."""
    groups = config_groups(config_dir)
    result = []
    for override in overrides:
        key, sep, value = override.partition("=")
        if sep and not key.lstrip("+~"):
            raise UsageError(f"'{override}' has no key before '=': write KEY=VALUE (optimizer.lr=3e-4) "
                             "or GROUP=OPTION (model=lenet).")
        if sep and key.lstrip("+~") in groups:
            names = {o.name for o in groups[key.lstrip("+~")]}
            if not value and not key.startswith("~"):
                group = key.lstrip("+~")
                raise UsageError(f"{key}= is empty: choose an option for {group}: {', '.join(sorted(names))} "
                                 f"(see `dlkit config list {group}`).")
            if value in ("null", "none", "None") and value not in names:
                result.append(f"~{key.lstrip('+~')}")  # `logger=null` switches the group off
                continue
            if re.fullmatch(r"[0-9][0-9,]*", value):
                value = ",".join(f"'{v}'" for v in value.split(","))
        elif sep and key.lstrip("+~") in RUN_REFERENCES and re.fullmatch(r"[0-9][0-9,]*", value):
            value = ",".join(f"'{v}'" for v in value.split(","))  # run id 124013 (or 007123), not a number
        result.append(f"{key}{sep}{value}")
    return result


def _parse(overrides: list[str]):
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    try:
        return OverridesParser.create().parse_overrides(overrides=list(overrides))
    except OverrideParseException as err:
        first = str(err).splitlines()[0]
        raise UsageError(f"Cannot read override: {first}. Write key=value, e.g. optimizer.lr=3e-4.") from err


def expand_sweep(overrides: list[str]) -> list[list[str]]:
    """The jobs of a multirun: one override list per combination (`lr=1e-3,1e-4 seed=0,1` gives four)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    parsed = _parse(normalize(overrides))
    batches = BasicSweeper.split_arguments(parsed, max_batch_size=None)
    return [list(job) for job in batches[0]] if batches else [[]]


def compose(overrides: list[str] | tuple[str, ...] = (), config_dir: str | Path | None = None,
            config_name: str = PRIMARY) -> DictConfig:
    """Compose packaged + user configs with the overrides, validate, and return the config (no hydra node)."""
    return compose_with_choices(overrides, config_dir, config_name)[0]


def compose_with_choices(overrides: list[str] | tuple[str, ...] = (), config_dir: str | Path | None = None,
                         config_name: str = PRIMARY) -> tuple[DictConfig, dict[str, str]]:
    """The composed config and the option chosen for each group (`model`: `mlp`, ...)."""
    overrides = normalize(overrides, config_dir)
    parsed = _parse(overrides)
    sweeps = [o.input_line for o in parsed if o.is_sweep_override()]
    if sweeps:
        raise UsageError(f"'{sweeps[0]}' lists several values: add -m (--multirun) to run one job per value.")
    user_dir = user_conf_dir(config_dir)
    loader = _loader(user_dir)
    cfg = _load(loader, config_name, overrides, user_dir)
    check_types(loader, config_name, parsed, cfg, config_groups(user_dir), _run_mode())
    choices = OmegaConf.to_container(cfg.hydra.runtime.choices)
    groups = set(loader.list_groups(""))
    for override in parsed:  # a list of options (`logger=[csv,wandb]`) is a choice too, which Hydra leaves out
        if override.key_or_group in groups and isinstance(override.value(), list):
            choices[override.key_or_group] = f"[{','.join(str(v) for v in override.value())}]"
    with open_dict(cfg):
        cfg.pop("hydra", None)
    return cfg, {k: v for k, v in choices.items() if not k.startswith("hydra/") and v is not None}


def _load(loader, config_name: str, overrides: list[str], user_dir: Path | None) -> DictConfig:
    import yaml
    from hydra.errors import ConfigCompositionException, MissingConfigException
    from hydra.types import RunMode

    try:
        return loader.load_configuration(config_name=config_name, overrides=overrides, run_mode=RunMode.RUN,
                                         from_shell=False)
    except yaml.YAMLError as err:
        raise _broken_yaml(err, user_dir) from err
    except MissingConfigException as err:
        raise _missing_option(err, overrides, user_dir) from err
    except ConfigCompositionException as err:
        raise _composition_error(err, loader, config_name, overrides, user_dir) from err


def _broken_yaml(err: Exception, user_dir: Path | None) -> UsageError:
    """Name the config file (and line) that is not valid YAML: the parser only knew the text, not the file."""
    import yaml

    for root in [r for r in (user_dir, packaged_conf_dir()) if r is not None]:
        for file in sorted(root.rglob("*.yaml")):
            try:
                yaml.safe_load(file.read_text(encoding="utf-8"))
            except yaml.YAMLError as bad:
                mark = getattr(bad, "problem_mark", None)
                where = f":{mark.line + 1}" if mark is not None else ""
                problem = getattr(bad, "problem", None) or str(bad).splitlines()[0]
                return UsageError(f"{file}{where} is not valid YAML ({problem}): fix it, or delete it to use the "
                                  "packaged config.")
    return UsageError(f"a config file is not valid YAML: {' '.join(str(err).split())}")


def _missing_option(err: Exception, overrides: list[str], user_dir: Path | None) -> UsageError:
    message = str(err)
    match = re.search(r"Could not find '([^']+)/([^'/]+)'", message)
    if match:
        group, name = match.group(1).lstrip("/"), match.group(2)
        options = [o.name for o in config_groups(user_dir).get(group, [])]
        if options:
            return UsageError(f"Unknown {group} '{name}'.{did_you_mean(name, options)} "
                              f"Options for {group}: {', '.join(options)} (see `dlkit config list {group}`).")
    if "Cannot find primary config" in message:
        return UsageError(f"No config named '{message.split(chr(39))[1]}' in the search path.")
    return UsageError(message.splitlines()[0])


def _composition_error(err: Exception, loader, config_name: str, overrides: list[str],
                       user_dir: Path | None) -> UsageError:
    message = str(err)
    match = re.match(r"Could not append to config\. An item is already at '([^']+)'", message)
    if match:  # `+key=value` for a key that exists: the + is the mistake, not the key
        key = match.group(1)
        given = next((o for o in overrides if o.lstrip("+").split("=", 1)[0] == key), f"{key}=...")
        return UsageError(f"{key} is already in the config: write {given.lstrip('+')} (without +) to change it.")
    match = re.match(r"Could not override '([^']+)'\. No match in the defaults list", message)
    if match and match.group(1) in config_groups(user_dir):  # a group that train.yaml does not pick by itself
        group = match.group(1)
        given = next((o for o in overrides if o.split("=", 1)[0] == group), f"{group}=...")
        return UsageError(f"{group} is not picked by default, so there is nothing to override: add it with "
                          f"+{given} (see `dlkit config list {group}`).")
    match = re.match(r"Multiple values for ([^ ]+)\. To override a value use 'override", message)
    given = next((o for o in overrides if match and o.startswith(f"+{match.group(1)}=")), None)
    if given:  # Hydra's hint ('override GROUP: OPTION') is defaults-list syntax, meaningless on a command line
        return UsageError(f"{match.group(1)} is already in the defaults: write {given[1:]} (without +).")
    match = re.search(r"Could not (?:override|append to|delete from config)[^']*'([^']+)'", message)
    key = match.group(1) if match else None
    if key is None:
        match = re.search(r"Could not delete from config. '([^']+)'", message)
        key = match.group(1) if match else None
    if key:
        groups = config_groups(user_dir)
        base_overrides = [o for o in overrides if o.split("=")[0].lstrip("+~") in groups]
        try:
            base = loader.load_configuration(config_name=config_name, overrides=base_overrides,
                                             run_mode=_run_mode(), from_shell=False)
        except Exception:  # noqa: BLE001 - only used to phrase a suggestion
            base = OmegaConf.create()
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(base, parent) if parent else base
        siblings = [str(k) for k in node] if isinstance(node, DictConfig) else []
        if not parent:
            siblings = [s for s in siblings if s != "hydra"] + list(groups)
        hint = did_you_mean(leaf, siblings)
        if hint:
            hint = hint.replace("mean ", f"mean {parent + '.' if parent else ''}", 1)
        value = next((o.split("=", 1)[1] for o in overrides if o.split("=")[0].lstrip("+~") == key and "=" in o), "")
        if message.startswith("Could not delete") or "delete" in message.splitlines()[0]:
            return UsageError(f"Cannot delete '{key}': it is not in the config.{hint}")
        add = f" To add a new key, write +{key}={value}." if value else ""
        return UsageError(f"Unknown key '{key}'.{hint}{add}")
    return UsageError(message.splitlines()[0])


def _run_mode():
    from hydra.types import RunMode

    return RunMode.RUN


def to_yaml(cfg: DictConfig | dict, resolve: bool = False) -> str:
    """The config as YAML, each node's `_target_` first (shared blocks are merged before an option's own keys);
    unresolved interpolations stay visible unless resolve=True."""
    container = OmegaConf.to_container(cfg, resolve=resolve) if isinstance(cfg, DictConfig) else cfg
    return OmegaConf.to_yaml(OmegaConf.create(_target_first(container)))


def _target_first(node: Any) -> Any:
    if isinstance(node, dict):
        keys = sorted(node, key=lambda key: key != "_target_")
        return {key: _target_first(node[key]) for key in keys}
    if isinstance(node, list):
        return [_target_first(item) for item in node]
    return node


def copy_option(spec: str, config_dir: str | Path | None = None) -> Path:
    """Copy a packaged GROUP/OPTION into the user's config folder and return the new file."""
    group, _, name = spec.strip("/").rpartition("/")
    groups = config_groups()
    if not group or group not in groups:
        raise UsageError(f"'{spec}' is not GROUP/OPTION.{did_you_mean(group or spec, groups)} "
                         f"Groups: {', '.join(groups)}.")
    options = {o.name: o for o in groups[group]}
    if name not in options:
        raise UsageError(f"Unknown {group} '{name}'.{did_you_mean(name, options)} "
                         f"Options for {group}: {', '.join(options)}.")
    target_root = Path(config_dir) if config_dir is not None else Path.cwd() / "conf"
    target = target_root / group / f"{name}.yaml"
    if target.exists():
        raise UsageError(f"{target} already exists: edit it, or delete it to copy again.")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(options[name].path, target)
    return target
