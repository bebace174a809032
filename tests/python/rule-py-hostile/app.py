"""A hostile Python rule for the sandbox tests: what it does is its
`mode` config — `loop` spins forever, `grow` allocates without bound,
`http` calls a destination its manifest does not grant, `post` posts
JSON to its `url` config and notes the answer; anything else answers
normally."""

from eventpulse_plugin import Decision, rule


@rule(name="rule-py-hostile", subscribe=[("alert.raised", {})])
class RulePlugin:
    def decide(self, event, cx):
        mode = cx.config("mode", "ok")
        if mode == "loop":
            n = 0
            while True:
                n += 1
        if mode == "grow":
            hoard = []
            while True:
                hoard.append(bytearray(1 << 20))
        if mode == "http":
            cx.http("GET", "http://127.0.0.1:9/not-granted")
        if mode == "post":
            answer = cx.post_json(cx.config("url"), {"alert": event.alert.name}).check().json()
            return Decision.none().with_note(f"posted, answer {answer}")
        return Decision.none().with_note(f"python answered in mode {mode}")
