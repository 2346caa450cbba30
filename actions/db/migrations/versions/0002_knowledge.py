"""knowledge base: FAQ entries, document passages, corrections (错题本)

Revision ID: 0002
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'kb_entries',
        sa.Column('id', sa.String(length=128), nullable=False),
        sa.Column('kind', sa.String(length=8), nullable=False),
        sa.Column('question', sa.Text(), nullable=False),
        sa.Column('answer', sa.Text(), nullable=False),
        sa.Column('similar', sa.JSON(), nullable=False),
        sa.Column('category', sa.String(length=64), nullable=False),
        sa.Column('source', sa.String(length=256), nullable=False),
        sa.Column('heading', sa.String(length=256), nullable=False),
        sa.Column('valid_from', sa.DateTime(), nullable=True),
        sa.Column('valid_to', sa.DateTime(), nullable=True),
        sa.Column('origin', sa.String(length=256), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_kb_entries')),
    )
    with op.batch_alter_table('kb_entries', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_kb_entries_origin'), ['origin'], unique=False)

    op.create_table(
        'kb_corrections',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('query', sa.Text(), nullable=False),
        sa.Column('wrong_entry_id', sa.String(length=128), nullable=True),
        sa.Column('right_entry_id', sa.String(length=128), nullable=True),
        sa.Column('new_answer', sa.Text(), nullable=True),
        sa.Column('created_entry_id', sa.String(length=128), nullable=True),
        sa.Column('intent', sa.String(length=64), nullable=True),
        sa.Column('conversation_id', sa.String(length=255), nullable=True),
        sa.Column('staff', sa.String(length=64), nullable=False),
        sa.Column('note', sa.Text(), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.CheckConstraint('right_entry_id IS NOT NULL OR new_answer IS NOT NULL',
                           name=op.f('ck_kb_corrections_right_or_new')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_kb_corrections')),
    )
    with op.batch_alter_table('kb_corrections', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_kb_corrections_conversation_id'), ['conversation_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_kb_corrections_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_kb_corrections_right_entry_id'), ['right_entry_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('kb_corrections', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_kb_corrections_right_entry_id'))
        batch_op.drop_index(batch_op.f('ix_kb_corrections_created_at'))
        batch_op.drop_index(batch_op.f('ix_kb_corrections_conversation_id'))
    op.drop_table('kb_corrections')
    with op.batch_alter_table('kb_entries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_kb_entries_origin'))
    op.drop_table('kb_entries')
