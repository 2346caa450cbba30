"""`rasa run` with two hot spots of Rasa 3.6 removed (found by profiling the server under load;
behaviour is unchanged, see tests/data_layer/test_rasa_speedups.py):

- every action-server response is validated with `jsonschema.validate`, which first re-checks the
  constant schema against the JSON-Schema meta-schema on every call (~17 % of the server's CPU);
  we build the validator once and apply the same schema;
- every event read from the tracker store looks up its class by walking all subclasses of
  `Event` (`Event.resolve_by_type`), hundreds of thousands of calls per minute; we keep a map from
  type name to class and rebuild it when a name is not found.

Usage (the run command does this): python -m bot.rasa_server run --model ... (any `rasa` args)
"""
from __future__ import annotations

import functools
import sys


def _install_cached_action_validation() -> None:
    from jsonschema import ValidationError
    from jsonschema.validators import validator_for
    from rasa.core.actions.action import RemoteAction
    from rasa.shared.constants import DOCS_BASE_URL

    @functools.lru_cache(maxsize=1)
    def validator():
        schema = RemoteAction.action_response_format_spec()
        cls = validator_for(schema)
        cls.check_schema(schema)
        return cls(schema)

    def _validate_action_result(self, result):
        try:
            validator().validate(result)
            return True
        except ValidationError as e:
            e.message += (". Failed to validate Action server response from API, make sure your response from "
                          f"the Action endpoint is valid. For more information about the format visit "
                          f"{DOCS_BASE_URL}/custom-actions")
            raise e

    RemoteAction._validate_action_result = _validate_action_result


def _install_event_type_cache() -> None:
    import rasa.shared.utils.common
    from rasa.shared.core.events import Event

    by_name: dict = {}
    original = Event.resolve_by_type

    def resolve_by_type(type_name, default=None):
        cls = by_name.get(type_name)
        if cls is None:
            by_name.clear()
            for subclass in rasa.shared.utils.common.all_subclasses(Event):
                by_name.setdefault(subclass.type_name, subclass)
            cls = by_name.get(type_name)
        if cls is None:
            return original(type_name, default)
        return cls

    Event.resolve_by_type = staticmethod(resolve_by_type)


def install() -> None:
    _install_cached_action_validation()
    _install_event_type_cache()


def main() -> None:
    install()
    from rasa.__main__ import main as rasa_main

    sys.argv = ["rasa", *sys.argv[1:]]
    rasa_main()


if __name__ == "__main__":
    main()
