"""WeChat connectors: inbox (dedup), 微信客服 cursors, outbox, reply windows, groups, robot sends,
mass-send tasks (models in channels/wechat/models.py)

Revision ID: 0003
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'wechat_inbound',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('channel', sa.String(length=16), nullable=False),
        sa.Column('dedup_key', sa.String(length=160), nullable=False),
        sa.Column('conversation_id', sa.String(length=255), nullable=False),
        sa.Column('payload', sa.JSON(), nullable=False),
        sa.Column('status', sa.String(length=12), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('claimed_by', sa.String(length=64), nullable=True),
        sa.Column('claimed_at', sa.DateTime(), nullable=True),
        sa.Column('error', sa.String(length=256), nullable=True),
        sa.Column('received_at', sa.DateTime(), nullable=False),
        sa.Column('processed_at', sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_wechat_inbound')),
        sa.UniqueConstraint('channel', 'dedup_key', name='uq_wechat_inbound_channel_dedup'),
    )
    op.create_index('ix_wechat_inbound_status_received', 'wechat_inbound', ['status', 'received_at'])

    op.create_table(
        'wechat_kf_cursors',
        sa.Column('open_kfid', sa.String(length=64), nullable=False),
        sa.Column('cursor', sa.String(length=128), nullable=False),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('open_kfid', name=op.f('pk_wechat_kf_cursors')),
    )

    op.create_table(
        'wechat_outbox',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('channel', sa.String(length=16), nullable=False),
        sa.Column('recipient', sa.String(length=255), nullable=False),
        sa.Column('account', sa.String(length=64), nullable=True),
        sa.Column('conversation_id', sa.String(length=255), nullable=True),
        sa.Column('customer_id', sa.Integer(), nullable=True),
        sa.Column('msgtype', sa.String(length=16), nullable=False),
        sa.Column('body', sa.JSON(), nullable=False),
        sa.Column('idempotency_key', sa.String(length=64), nullable=False),
        sa.Column('status', sa.String(length=12), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('next_attempt_at', sa.DateTime(), nullable=False),
        sa.Column('claimed_by', sa.String(length=64), nullable=True),
        sa.Column('claimed_at', sa.DateTime(), nullable=True),
        sa.Column('last_errcode', sa.Integer(), nullable=True),
        sa.Column('last_error', sa.String(length=256), nullable=True),
        sa.Column('platform_msgid', sa.String(length=64), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('sent_at', sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], name=op.f('fk_wechat_outbox_customer_id_customers'),
                                ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_wechat_outbox')),
        sa.UniqueConstraint('idempotency_key', name='uq_wechat_outbox_idempotency_key'),
    )
    op.create_index('ix_wechat_outbox_status_next', 'wechat_outbox', ['status', 'next_attempt_at'])
    op.create_index('ix_wechat_outbox_recipient', 'wechat_outbox', ['channel', 'recipient', 'status'])
    op.create_index(op.f('ix_wechat_outbox_conversation_id'), 'wechat_outbox', ['conversation_id'])
    op.create_index(op.f('ix_wechat_outbox_customer_id'), 'wechat_outbox', ['customer_id'])

    op.create_table(
        'wechat_reply_windows',
        sa.Column('channel', sa.String(length=16), nullable=False),
        sa.Column('user_id', sa.String(length=128), nullable=False),
        sa.Column('account', sa.String(length=64), nullable=True),
        sa.Column('message_at', sa.DateTime(), nullable=True),
        sa.Column('message_sent', sa.Integer(), nullable=False),
        sa.Column('event_at', sa.DateTime(), nullable=True),
        sa.Column('event_sent', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('channel', 'user_id', name=op.f('pk_wechat_reply_windows')),
    )

    op.create_table(
        'wechat_groups',
        sa.Column('chat_id', sa.String(length=64), nullable=False),
        sa.Column('name', sa.String(length=128), nullable=False),
        sa.Column('owner_userid', sa.String(length=64), nullable=True),
        sa.Column('robot_key', sa.String(length=128), nullable=True),
        sa.Column('delivery_mode', sa.String(length=16), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('chat_id', name=op.f('pk_wechat_groups')),
    )

    op.create_table(
        'wechat_robot_sends',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('chat_id', sa.String(length=64), nullable=False),
        sa.Column('sent_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_wechat_robot_sends')),
    )
    op.create_index('ix_wechat_robot_sends_chat_at', 'wechat_robot_sends', ['chat_id', 'sent_at'])

    op.create_table(
        'wechat_mass_tasks',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('outbox_id', sa.Integer(), nullable=True),
        sa.Column('msgid', sa.String(length=64), nullable=True),
        sa.Column('sender', sa.String(length=64), nullable=False),
        sa.Column('chat_ids', sa.JSON(), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('results', sa.JSON(), nullable=False),
        sa.Column('reminders', sa.Integer(), nullable=False),
        sa.Column('last_reminded_at', sa.DateTime(), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('checked_at', sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(['outbox_id'], ['wechat_outbox.id'],
                                name=op.f('fk_wechat_mass_tasks_outbox_id_wechat_outbox'), ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_wechat_mass_tasks')),
        sa.UniqueConstraint('msgid', name=op.f('uq_wechat_mass_tasks_msgid')),
        sa.UniqueConstraint('outbox_id', name=op.f('uq_wechat_mass_tasks_outbox_id')),
    )


def downgrade() -> None:
    op.drop_table('wechat_mass_tasks')
    op.drop_index('ix_wechat_robot_sends_chat_at', table_name='wechat_robot_sends')
    op.drop_table('wechat_robot_sends')
    op.drop_table('wechat_groups')
    op.drop_table('wechat_reply_windows')
    op.drop_index(op.f('ix_wechat_outbox_customer_id'), table_name='wechat_outbox')
    op.drop_index(op.f('ix_wechat_outbox_conversation_id'), table_name='wechat_outbox')
    op.drop_index('ix_wechat_outbox_recipient', table_name='wechat_outbox')
    op.drop_index('ix_wechat_outbox_status_next', table_name='wechat_outbox')
    op.drop_table('wechat_outbox')
    op.drop_table('wechat_kf_cursors')
    op.drop_index('ix_wechat_inbound_status_received', table_name='wechat_inbound')
    op.drop_table('wechat_inbound')
