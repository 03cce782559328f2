"""stamp-hie, written in Python: fills an empty MSH-22 (responsible sending
organization) with the HIE's organization from the config key `organization`
and records the original sending facility (MSH-4) in `original-sender`.

Built into a WebAssembly component with componentize-py (see plugins/README.md).
"""

import wit_world
from wit_world.imports import host, types


class WitWorld(wit_world.WitWorld):
    def process(self, msg: types.Envelope) -> types.Outcome:
        text = msg.hl7
        end = text.find("\r")
        header, rest = (text, "") if end < 0 else (text[:end], text[end:])
        if not header.startswith("MSH") or len(header) < 4:
            raise wit_world.Err("the message does not start with an MSH segment")
        sep = header[3]
        fields = header.split(sep)  # fields[k] is MSH-(k+1)
        sender = fields[3] if len(fields) > 3 else ""
        organization = host.config("organization") or ""
        replaced = None
        if organization and (len(fields) <= 21 or fields[21] == ""):
            fields += [""] * (22 - len(fields))
            fields[21] = organization
            replaced = sep.join(fields) + rest
        return types.Outcome(
            verdict=types.Verdict_Continue(replaced),
            issues=[],
            attributes=[("original-sender", sender)],
        )
