"""The one question shape every loader and generator produces (defined in the portable layer, which the
deployed agents share)."""

from tiesmerge.portable.mcq import LETTERS, InvalidQuestion, Question, make_question, question_id

__all__ = ["LETTERS", "InvalidQuestion", "Question", "make_question", "question_id"]
