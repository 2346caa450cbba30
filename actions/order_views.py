"""Turns orders and tickets into the variables of the domain's order responses."""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Dict, List, Optional, Tuple

from actions.db.models import Order, OrderStatus, Ticket
from actions.templates import date_text, datetime_text, fmt, label, yuan
from bot.settings import ShopConfig


def items_summary(order: Order) -> str:
    if not order.items:
        return ""
    first = order.items[0].product_name
    count = sum(i.quantity for i in order.items)
    return fmt("items_one", name=first) if count == 1 else fmt("items_many", name=first, count=count)


def items_detail(order: Order) -> str:
    return "\n".join(fmt("item_line", name=i.product_name, spec=i.spec, quantity=i.quantity) for i in order.items)


def order_line(index: int, order: Order, tz: str) -> str:
    return fmt("order_line", index=index, order_no=order.order_no, items=items_summary(order),
               status=label("order_status", order.status), date=date_text(order.created_at, tz))


def order_button_title(index: int, order: Order) -> str:
    return fmt("order_button", index=index, items=items_summary(order), status=label("order_status", order.status))


def base_vars(order: Order) -> Dict[str, Any]:
    return {
        "order_no": order.order_no,
        "items": items_summary(order),
        "items_detail": items_detail(order),
        "amount": yuan(order.paid_fen or order.total_fen),
        "status": label("order_status", order.status),
        "carrier": order.carrier or "",
        "tracking_no": order.tracking_no or "",
    }


def status_response(order: Order, shop: ShopConfig, now: datetime,
                    tickets: List[Ticket]) -> Tuple[str, Dict[str, Any]]:
    """The response name and variables that answer "where is my order" for this order."""
    tz = shop.timezone
    v = base_vars(order)
    status = order.status
    if status == OrderStatus.pending_payment.value:
        v["close_at"] = datetime_text(order.created_at + timedelta(minutes=shop.unpaid_close_minutes), tz)
        return "utter_order_status_pending_payment", v
    if status == OrderStatus.paid.value:
        paid_at = order.paid_at or order.created_at
        v["paid_at"] = datetime_text(paid_at, tz)
        v["ship_by"] = datetime_text(paid_at + timedelta(hours=shop.ship_within_hours), tz)
        overdue = now > paid_at + timedelta(hours=shop.ship_within_hours)
        return ("utter_order_status_paid_overdue" if overdue else "utter_order_status_paid"), v
    if status == OrderStatus.shipped.value:
        v.update(carrier=order.carrier or "", tracking_no=order.tracking_no or "")
        latest = order.logistics[-1] if order.logistics else None
        if latest is None:
            v["shipped_at"] = datetime_text(order.shipped_at or now, tz)
            return "utter_order_status_shipped_no_scan", v
        v["latest_time"] = datetime_text(latest.occurred_at, tz)
        v["latest_event"] = latest.description
        v["track"] = "\n".join(fmt("logistics_line", time=datetime_text(e.occurred_at, tz), description=e.description)
                               for e in reversed(order.logistics[-3:]))
        stalled = now - latest.occurred_at > timedelta(hours=shop.logistics_stall_hours)
        if stalled:
            v["stalled_days"] = max(1, int((now - latest.occurred_at).total_seconds() // 86400))
            return "utter_order_status_shipped_stalled", v
        return "utter_order_status_shipped", v
    if status in (OrderStatus.delivered.value, OrderStatus.completed.value):
        delivered = order.delivered_at or order.updated_at
        v.update(carrier=order.carrier or "", tracking_no=order.tracking_no or "",
                 delivered_at=datetime_text(delivered, tz),
                 signed=order.logistics[-1].description if order.logistics else "")
        deadline = delivered + timedelta(days=shop.return_window_days)
        if now <= deadline:
            v["return_deadline"] = date_text(deadline, tz)
            return "utter_order_status_delivered", v
        return "utter_order_status_completed", v
    if status == OrderStatus.cancelled.value:
        v["cancelled_at"] = datetime_text(order.cancelled_at or order.updated_at, tz)
        return "utter_order_status_cancelled", v
    ticket = tickets[0] if tickets else None
    v["ticket_no"] = ticket.ticket_no if ticket else ""
    v["ticket_status"] = label("ticket_status", ticket.status) if ticket else ""
    if status == OrderStatus.refunding.value:
        return ("utter_order_status_refunding" if ticket else "utter_order_status_refunding_no_ticket"), v
    return "utter_order_status_refunded", v


def ticket_vars(ticket: Ticket, tz: str) -> Dict[str, Any]:
    return {
        "ticket_no": ticket.ticket_no,
        "ticket_kind": label("ticket_kind", ticket.kind),
        "ticket_status": label("ticket_status", ticket.status),
        "ticket_created": datetime_text(ticket.created_at, tz),
        "ticket_updated": datetime_text(ticket.updated_at or ticket.created_at, tz),
        "order_no": ticket.order.order_no if ticket.order is not None else "",
        "resolution": ticket.resolution or "",
    }


def eligibility(task: str, order: Order, shop: ShopConfig, now: datetime,
                open_after_sales: Optional[Ticket]) -> Tuple[bool, Optional[str]]:
    """Whether the customer may do `task` on this order now; if not, the response that explains why."""
    status = order.status
    rules = shop.orders
    if task == "status":
        return True, None
    if task == "cancel":
        if status in rules.cancellable_statuses:
            return True, None
        return False, {
            "shipped": "utter_cancel_refused_shipped",
            "delivered": "utter_cancel_refused_delivered",
            "completed": "utter_cancel_refused_delivered",
            "cancelled": "utter_cancel_refused_cancelled",
        }.get(status, "utter_cancel_refused_after_sales")
    if task == "change":
        if status in rules.address_changeable_statuses:
            return True, None
        return False, {
            "shipped": "utter_change_refused_shipped",
            "delivered": "utter_change_refused_delivered",
            "completed": "utter_change_refused_delivered",
            "cancelled": "utter_change_refused_cancelled",
        }.get(status, "utter_change_refused_after_sales")
    if task == "return":
        if open_after_sales is not None or status == OrderStatus.refunding.value:
            return False, "utter_return_refused_in_progress"
        if status == OrderStatus.refunded.value:
            return False, "utter_return_refused_refunded"
        if status == OrderStatus.cancelled.value:
            return False, "utter_return_refused_cancelled"
        if status in (OrderStatus.pending_payment.value, OrderStatus.paid.value):
            return False, "utter_return_refused_not_shipped"
        if status == OrderStatus.shipped.value:
            return False, "utter_return_refused_not_delivered"
        if status in rules.returnable_statuses:
            delivered = order.delivered_at or order.updated_at
            if now - delivered <= timedelta(days=shop.return_window_days):
                return True, None
            return False, "utter_return_refused_expired"
        return False, "utter_return_refused_in_progress"
    raise ValueError(f"unknown order task {task!r}")
