"""Build the agents from a config file: the model is loaded once and warmed up before any timed item."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

from tiesmerge.agents.answer import AnswerAgent
from tiesmerge.agents.config import AgentsConfig, load_agents_config
from tiesmerge.agents.fallback import FallbackPool
from tiesmerge.agents.loader import AgentModel, load_agent_model
from tiesmerge.agents.question import QuestionAgent
from tiesmerge.quiet import quiet_libraries


def _log(msg: str) -> None:
    print(msg, file=sys.stderr)


@torch.no_grad()
def warm_up(loaded: AgentModel) -> None:
    """One short forward and a 2-token generate, so first-call costs (CUDA context, kernels) hit no question."""
    tok, model = loaded.tokenizer, loaded.model
    ids = torch.tensor([tok("Warm up.", add_special_tokens=False)["input_ids"]], device=next(model.parameters()).device)
    model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=2, do_sample=False,
                   pad_token_id=tok.pad_token_id)


def load(config_path: Path) -> tuple[AgentsConfig, AgentModel]:
    quiet_libraries()
    cfg, root = load_agents_config(config_path, _log)
    loaded = load_agent_model(cfg, root, _log)
    warm_up(loaded)
    return cfg, loaded


def answer_agent(cfg: AgentsConfig, loaded: AgentModel) -> AnswerAgent:
    return AnswerAgent(loaded.model, loaded.tokenizer, cfg.answer)


def question_agent(cfg: AgentsConfig, loaded: AgentModel, num_questions: int) -> QuestionAgent:
    topics = cfg.question.topics
    pool = FallbackPool(topics, per_topic=math.ceil(num_questions / len(topics)) + 2, seed=cfg.question.seed)
    return QuestionAgent(loaded.model, loaded.tokenizer, cfg.question, answer_agent(cfg, loaded), pool)
