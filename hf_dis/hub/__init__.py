"""Hub-ready students: the model card of a distilled student (data, rendering, templates) and pushing a trained
student's folder to the Hub (`push_student`)."""

from hf_dis.hub.card import CARD_DATA_NAME, StudentCardData, render_card
from hf_dis.hub.from_trainer import head_step_times, student_card_data
from hf_dis.hub.push import push_student, write_card

__all__ = [
    "CARD_DATA_NAME",
    "StudentCardData",
    "head_step_times",
    "push_student",
    "render_card",
    "student_card_data",
    "write_card",
]
