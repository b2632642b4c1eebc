"""judgements: the annotator an imported file named, kept beside the importer's

An imported judgement is always recorded as `import:FILE`, so a file cannot
make its rows count as a person's or a judge's; what the file itself said
(`"annotator": "alice"`) is kept in `source_annotator`.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 09:50:00
"""

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('judgement', schema=None) as batch_op:
        batch_op.add_column(sa.Column('source_annotator', sqlmodel.sql.sqltypes.AutoString(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('judgement', schema=None) as batch_op:
        batch_op.drop_column('source_annotator')
