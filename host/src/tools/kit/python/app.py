"""@NAME@: an izhub plugin in Python. It rejects a message without a birth
date (PID-7) and otherwise lets it go on unchanged.

Built into a WebAssembly component with componentize-py by
`izhub plugin build` (see izhub-plugin.toml for its manifest).
"""

import wit_world
from wit_world.imports import types


class WitWorld(wit_world.WitWorld):
    def process(self, msg: types.Envelope) -> types.Outcome:
        segments = msg.hl7.split("\r")
        header = segments[0] if segments else ""
        if not header.startswith("MSH") or len(header) < 4:
            raise wit_world.Err("the message does not start with an MSH segment")
        sep = header[3]
        pid = next((s for s in segments if s.startswith("PID" + sep)), "")
        fields = pid.split(sep)
        birth_date = fields[7] if len(fields) > 7 else ""
        if birth_date == "":
            issue = types.Issue(
                severity=types.Severity.ERROR,
                code="101",
                app_code="7",
                location="PID-7",
                text="The patient's birth date (PID-7) is required.",
            )
            return types.Outcome(verdict=types.Verdict_Reject([issue]), issues=[], attributes=[])
        return types.Outcome(verdict=types.Verdict_Continue(None), issues=[], attributes=[])
