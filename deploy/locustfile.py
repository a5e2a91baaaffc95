"""Load test for an athanor endpoint (one process, Ray Serve replicas, or the Kubernetes Service).

    pip install locust
    locust -f deploy/locustfile.py --host http://127.0.0.1:11435 --headless -u 32 -r 4 -t 5m

Each simulated user holds a conversation: a few turns that grow the message list (so prefix-cache affinity
matters), streamed through /v1/chat/completions, with a think time between turns. Set ATHANOR_MODEL (default
smollm2), ATHANOR_API_KEY and ATHANOR_MAX_TOKENS to match the deployment. Watch athanor_queue_depth climb on
/metrics, the HPA (or Ray's autoscaler) add replicas, and TTFT come back down.
"""

import itertools
import json
import os
import random

from locust import HttpUser, between, task

MODEL = os.environ.get("ATHANOR_MODEL", "smollm2")
MAX_TOKENS = int(os.environ.get("ATHANOR_MAX_TOKENS", "64"))
TOPICS = ["the sea", "volcanoes", "bread", "bicycles", "libraries", "owls", "rain", "chess"]
_ids = itertools.count()


class Chatter(HttpUser):
    wait_time = between(1, 5)

    def on_start(self):
        key = os.environ.get("ATHANOR_API_KEY")
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.new_conversation()

    def new_conversation(self):
        self.messages = [{"role": "system", "content": f"You are assistant {next(_ids)}."},
                         {"role": "user", "content": f"Tell me about {random.choice(TOPICS)}."}]

    @task
    def turn(self):
        body = {"model": MODEL, "messages": self.messages, "max_tokens": MAX_TOKENS, "stream": True}
        text = []
        with self.client.post("/v1/chat/completions", json=body, headers=self.headers, stream=True,
                              name="chat (stream)", catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"{r.status_code}: {r.text[:200]}")
                return
            for line in r.iter_lines(decode_unicode=True):
                if line and line.startswith("data: {"):
                    delta = json.loads(line[6:])["choices"]
                    text.append(delta[0]["delta"].get("content") or "" if delta else "")
        self.messages += [{"role": "assistant", "content": "".join(text)}, {"role": "user", "content": "Go on."}]
        if len(self.messages) > 8:
            self.new_conversation()
