"""rank items: the active order's place and a gold item's known answer

`serve_rank` is where the ranking job last placed an item in a batch served
`order = "active"` (null: the batch is served by position); `gold` is the
known best-first ranking of a gold item (null: not gold).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 16:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('rankitem', schema=None) as batch_op:
        batch_op.add_column(sa.Column('serve_rank', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('gold', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('rankitem', schema=None) as batch_op:
        batch_op.drop_column('gold')
        batch_op.drop_column('serve_rank')
