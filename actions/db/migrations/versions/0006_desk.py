"""Escalation desk: conversations handed to staff, staff messages, the desk's event log, staff users,
canned replies, the console's read positions, corrections (错题本) and models trained from the console; models in desk/models.py. Also joins the
migration branches into one head.

Revision ID: 0006
Revises: 0002, 0004, 0005
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = ('0002', '0004', '0005')
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'desk_conversations',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('conversation_id', sa.String(length=255), nullable=False),
        sa.Column('channel', sa.String(length=16), nullable=False),
        sa.Column('customer_id', sa.Integer(), nullable=True),
        sa.Column('customer_name', sa.String(length=64), nullable=False),
        sa.Column('state', sa.String(length=12), nullable=False),
        sa.Column('reason', sa.String(length=32), nullable=True),
        sa.Column('reason_text', sa.String(length=200), nullable=True),
        sa.Column('priority', sa.Integer(), nullable=False),
        sa.Column('assignee', sa.String(length=64), nullable=True),
        sa.Column('episode', sa.Integer(), nullable=False),
        sa.Column('queued_at', sa.DateTime(), nullable=True),
        sa.Column('assigned_at', sa.DateTime(), nullable=True),
        sa.Column('first_response_at', sa.DateTime(), nullable=True),
        sa.Column('closed_at', sa.DateTime(), nullable=True),
        sa.Column('snoozed_until', sa.DateTime(), nullable=True),
        sa.Column('ticket_no', sa.String(length=32), nullable=True),
        sa.Column('last_customer_at', sa.DateTime(), nullable=True),
        sa.Column('last_agent_at', sa.DateTime(), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], ondelete='SET NULL',
                                name=op.f('fk_desk_conversations_customer_id_customers')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_desk_conversations')),
        sa.UniqueConstraint('conversation_id', name=op.f('uq_desk_conversations_conversation_id')),
    )
    op.create_index('ix_desk_conversations_state_priority', 'desk_conversations', ['state', 'priority', 'queued_at'])
    op.create_index(op.f('ix_desk_conversations_customer_id'), 'desk_conversations', ['customer_id'])
    op.create_index(op.f('ix_desk_conversations_assignee'), 'desk_conversations', ['assignee'])

    op.create_table(
        'desk_messages',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('conversation', sa.Integer(), nullable=False),
        sa.Column('kind', sa.String(length=8), nullable=False),
        sa.Column('author', sa.String(length=64), nullable=False),
        sa.Column('text', sa.Text(), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('channel', sa.String(length=16), nullable=True),
        sa.Column('delivery', sa.String(length=12), nullable=True),
        sa.Column('delivery_detail', sa.String(length=256), nullable=True),
        sa.Column('outbox_ids', sa.JSON(), nullable=True),
        sa.Column('delivered_at', sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(['conversation'], ['desk_conversations.id'], ondelete='CASCADE',
                                name=op.f('fk_desk_messages_conversation_desk_conversations')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_desk_messages')),
    )
    op.create_index(op.f('ix_desk_messages_conversation'), 'desk_messages', ['conversation'])

    op.create_table(
        'desk_events',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('at', sa.DateTime(), nullable=False),
        sa.Column('conversation', sa.Integer(), nullable=False),
        sa.Column('kind', sa.String(length=24), nullable=False),
        sa.Column('actor', sa.String(length=80), nullable=False),
        sa.Column('detail', sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(['conversation'], ['desk_conversations.id'], ondelete='CASCADE',
                                name=op.f('fk_desk_events_conversation_desk_conversations')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_desk_events')),
    )
    op.create_index(op.f('ix_desk_events_at'), 'desk_events', ['at'])
    op.create_index(op.f('ix_desk_events_conversation'), 'desk_events', ['conversation'])
    op.create_index(op.f('ix_desk_events_kind'), 'desk_events', ['kind'])

    op.create_table(
        'staff_users',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('username', sa.String(length=64), nullable=False),
        sa.Column('display_name', sa.String(length=64), nullable=False),
        sa.Column('role', sa.String(length=16), nullable=False),
        sa.Column('password_hash', sa.String(length=256), nullable=False),
        sa.Column('disabled', sa.Boolean(), nullable=False),
        sa.Column('session_epoch', sa.Integer(), nullable=False),
        sa.Column('presence', sa.String(length=8), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('last_login_at', sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_staff_users')),
        sa.UniqueConstraint('username', name=op.f('uq_staff_users_username')),
    )

    op.create_table(
        'desk_canned_replies',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('title', sa.String(length=64), nullable=False),
        sa.Column('text', sa.Text(), nullable=False),
        sa.Column('created_by', sa.String(length=64), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_desk_canned_replies')),
        sa.UniqueConstraint('title', name=op.f('uq_desk_canned_replies_title')),
    )

    op.create_table(
        'desk_cursors',
        sa.Column('name', sa.String(length=32), nullable=False),
        sa.Column('position', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('name', name=op.f('pk_desk_cursors')),
    )


    op.create_table(
        'desk_corrections',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('at', sa.DateTime(), nullable=False),
        sa.Column('staff', sa.String(length=64), nullable=False),
        sa.Column('conversation', sa.Integer(), nullable=True),
        sa.Column('event_id', sa.BigInteger(), nullable=True),
        sa.Column('text', sa.Text(), nullable=False),
        sa.Column('wrong_intent', sa.String(length=64), nullable=True),
        sa.Column('right_intent', sa.String(length=64), nullable=True),
        sa.Column('kb_correction_id', sa.Integer(), nullable=True),
        sa.Column('note', sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(['conversation'], ['desk_conversations.id'], ondelete='SET NULL',
                                name=op.f('fk_desk_corrections_conversation_desk_conversations')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_desk_corrections')),
    )
    op.create_index(op.f('ix_desk_corrections_at'), 'desk_corrections', ['at'])
    op.create_index(op.f('ix_desk_corrections_conversation'), 'desk_corrections', ['conversation'])

    op.create_table(
        'desk_models',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('fingerprint', sa.String(length=64), nullable=True),
        sa.Column('path', sa.String(length=512), nullable=True),
        sa.Column('state', sa.String(length=12), nullable=False),
        sa.Column('results', sa.JSON(), nullable=False),
        sa.Column('log', sa.Text(), nullable=False),
        sa.Column('created_by', sa.String(length=64), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('finished_at', sa.DateTime(), nullable=True),
        sa.Column('activated_by', sa.String(length=64), nullable=True),
        sa.Column('activated_at', sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_desk_models')),
    )


def downgrade() -> None:
    for table in ('desk_models', 'desk_corrections', 'desk_cursors', 'desk_canned_replies', 'staff_users', 'desk_events', 'desk_messages',
                  'desk_conversations'):
        op.drop_table(table)
