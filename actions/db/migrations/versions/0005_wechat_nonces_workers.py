"""WeChat gateway: plaintext-mode callback nonces (a signature is never good for another body) and
the gateway workers' heartbeats (claims of a dead gateway are taken over); models in
channels/wechat/models.py

Revision ID: 0005
Revises: 0003
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'wechat_callback_nonces',
        sa.Column('connector', sa.String(length=16), nullable=False),
        sa.Column('timestamp', sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column('nonce', sa.String(length=64), nullable=False),
        sa.Column('body_sha256', sa.String(length=64), nullable=False),
        sa.Column('expires_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('connector', 'timestamp', 'nonce', name=op.f('pk_wechat_callback_nonces')),
    )
    op.create_index('ix_wechat_callback_nonces_expires_at', 'wechat_callback_nonces', ['expires_at'])

    op.create_table(
        'wechat_gateway_workers',
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('started_at', sa.DateTime(), nullable=False),
        sa.Column('seen_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('name', name=op.f('pk_wechat_gateway_workers')),
    )


def downgrade() -> None:
    op.drop_table('wechat_gateway_workers')
    op.drop_index('ix_wechat_callback_nonces_expires_at', table_name='wechat_callback_nonces')
    op.drop_table('wechat_callback_nonces')
