"""The YAML sgpo reads and writes (configs, compare configs): PyYAML's safe loader made strict
where YAML 1.1 and 1.2 disagree or a mistake would pass unseen (a key given twice, 1:30 read as
90, 010 as 8; 1e-3 read as the number YAML 1.2 makes it), and a dumper whose output reads back
as it was written."""

from __future__ import annotations

import re
from collections.abc import Hashable
from pathlib import Path

import yaml

from sgpo.errors import ConfigError

MERGE_TAG = "tag:yaml.org,2002:merge"


class UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (the later one would
    silently replace the earlier, e.g. a second `train:` section)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        merged = False
        for key_node, _ in node.value:
            if key_node.tag == MERGE_TAG:  # `<<: *base`: merged by the safe loader below, where
                if merged:  # a key given here overrides the merged one's
                    raise yaml.constructor.ConstructorError(
                        None, None, "merge key '<<' given twice", key_node.start_mark
                    )
                merged = True
                continue
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):  # YAML's own error for it, not a TypeError
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"found an unhashable key (a {type(key).__name__})",
                    key_node.start_mark,
                )
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        """YAML 1.1 (PyYAML) reads 1:30 as 90 (base 60), 010 as 8 and 0b11 as 3; YAML 1.2 reads
        a text, 10 and a text. Which the user meant is unknown, so those are refused; 07 (7 in
        both) is not."""
        value = super().construct_yaml_int(node)
        digits = node.value.replace("_", "")
        octal = YAML11_OCTAL.fullmatch(digits) and value != int(digits, 10)
        if ":" in digits or YAML11_BINARY.match(digits) or octal:
            raise _yaml11_number(node, value)
        return value

    def construct_yaml_float(self, node: yaml.ScalarNode) -> float:
        value = super().construct_yaml_float(node)
        if ":" in node.value:  # base 60 (1:30.5), a text in YAML 1.2
            raise _yaml11_number(node, value)
        return value


YAML11_OCTAL = re.compile(r"[-+]?0[0-7]+")
YAML11_BINARY = re.compile(r"[-+]?0b")


def _yaml11_number(node: yaml.ScalarNode, value: float) -> yaml.constructor.ConstructorError:
    return yaml.constructor.ConstructorError(
        None,
        None,
        f"{node.value!r} is {value!r} in YAML 1.1 (base 60, octal or binary) but not in YAML "
        "1.2: write the number in base 10, or quote a text",
        node.start_mark,
    )


UniqueKeyLoader.add_constructor("tag:yaml.org,2002:int", UniqueKeyLoader.construct_yaml_int)
UniqueKeyLoader.add_constructor("tag:yaml.org,2002:float", UniqueKeyLoader.construct_yaml_float)
# YAML 1.1 (PyYAML) reads 1e-3, 1.0e3 and 5E+2 as texts (its floats need a dot and a signed
# exponent); YAML 1.2 reads numbers, as users mean. Typed settings convert either way, but an
# untyped one (task.verifier_kwargs) would get a text, so they are read as YAML 1.2 reads them.
YAML12_EXPONENT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")


class QuotingDumper(yaml.SafeDumper):
    """YAML's safe dumper, quoting a text UniqueKeyLoader would read as a number ('2e5'), so
    a config written out (a run's config.yaml) reads back as it was."""


for _yaml_class in (UniqueKeyLoader, QuotingDumper):  # read and written alike
    _yaml_class.add_implicit_resolver(
        "tag:yaml.org,2002:float", YAML12_EXPONENT, list("-+0123456789.")
    )


def read_yaml_mapping(path: Path) -> dict:
    """A YAML file whose top level is a mapping (empty: {}); ConfigError naming the file (and
    the line, for a key given twice) otherwise."""
    try:
        with open(path, encoding="utf-8") as stream:  # errors then name the file
            tree = yaml.load(stream, UniqueKeyLoader) or {}
    except FileNotFoundError as e:
        raise ConfigError(f"config file not found: {path}") from e
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read it as a UTF-8 text file: {e}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return tree
