"""Similarity-preserving distillation (Tung & Mori 2019, "Similarity-Preserving Knowledge Distillation", ICCV,
arXiv 1907.09682): the student learns the teacher's pairwise similarity structure over the batch.

Retrieval ranks images by their embeddings, not by the training identities' logits, so this term distils what
re-ID uses. It compares `[B, B]` matrices, so the student's embedding may have another width than the teacher's,
and it costs B x B, not C: it is independent of how the logit term samples classes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def similarity_preserving_loss(student_embeddings: torch.Tensor, teacher_embeddings: torch.Tensor) -> torch.Tensor:
    """`||G_s - G_t||_F^2 / B^2`, where G = normalise_rows(E E^T) for each model's `[B, d]` embeddings E (each row
    of the Gram matrix scaled to unit L2 norm). Computed in float32; the teacher side carries no gradient.

    Args:
        student_embeddings: `[B, d_s]`.
        teacher_embeddings: `[B, d_t]`, the same B images in the same order (d_t may differ from d_s).
    """
    if student_embeddings.dim() != 2 or teacher_embeddings.dim() != 2:
        raise ValueError(
            f"embeddings must be [batch, width], got {tuple(student_embeddings.shape)} (student) and "
            f"{tuple(teacher_embeddings.shape)} (teacher)."
        )
    if student_embeddings.shape[0] != teacher_embeddings.shape[0]:
        raise ValueError(
            f"the student's and the teacher's embeddings must be of the same {student_embeddings.shape[0]} images, "
            f"got {teacher_embeddings.shape[0]} teacher rows."
        )
    batch_size = student_embeddings.shape[0]
    student = student_embeddings.float()
    teacher = teacher_embeddings.detach().float()
    student_gram = F.normalize(student @ student.T, dim=1)
    teacher_gram = F.normalize(teacher @ teacher.T, dim=1)
    return (student_gram - teacher_gram).pow(2).sum() / batch_size**2
