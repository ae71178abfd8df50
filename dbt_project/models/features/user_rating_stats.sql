{{ config(**partitioned_incremental_config()) }}
{% set w = partition_window(lookback_days=var('feature_lookback_days')) %}
{% set days = var('user_window_days') %}
{% set n = var('history_length') %}
-- One row per user and review moment t in the window: the user's state once the reviews at t are in,
-- stamped `timestamp` = t + 1 ms. Point in time: a row uses only events strictly before its `timestamp`, so a
-- point-in-time join for an event at t (feature timestamp <= t) sees the state before t and never the event
-- itself, while the newest row (what the online store serves) includes the user's latest review.

with window_users as (
    select distinct user_id
    from {{ ref('stg_reviews') }}
    where partition_date >= '{{ w.min_date }}' and partition_date < '{{ w.max_date }}'
),

-- Those users' earlier history within the lookback (the Dagster lineage of this model: a day reads the
-- `feature_lookback_days` before it and no further), so "last N items" are the last N of that span.
history as (
    select
        r.user_id,
        r.parent_asin,
        r.rating,
        r.event_ms,
        r.partition_date,
        row_number() over (partition by r.user_id order by r.event_ms, r.parent_asin) as seq,
        -- events at or before this moment (reviews sharing a moment all count)
        count(*) over (partition by r.user_id order by r.event_ms range between unbounded preceding and current row)
            as events_through
    from {{ ref('stg_reviews') }} as r
    inner join window_users as u on r.user_id = u.user_id
    where r.partition_date >= '{{ w.lookback_start }}' and r.partition_date < '{{ w.max_date }}'
),

moments as (
    select distinct
        user_id,
        event_ms,
        partition_date,
        events_through,
        count(rating) over prev_window as user_rating_cnt_{{ days }}d,
        avg(rating) over prev_window as user_rating_avg_prev_rating_{{ days }}d
    from history
    window prev_window as (
        partition by user_id order by event_ms
        range between {{ days_before_stamp_ms(days) }} preceding and current row
    )
),

targets as (
    select * from moments
    where partition_date >= '{{ w.min_date }}' and partition_date < '{{ w.max_date }}'
)

select
    t.user_id,
    {{ ms_to_timestamp('t.event_ms + 1') }} as timestamp,
    t.user_rating_cnt_{{ days }}d,
    t.user_rating_avg_prev_rating_{{ days }}d,
    {{ ordered_list('h.parent_asin', 'h.seq') }} as user_rating_list_{{ n }}_recent_asin,
    {{ ordered_list('h.event_ms', 'h.seq') }} as user_rating_list_{{ n }}_recent_asin_timestamp,
    t.partition_date
from targets as t
left join history as h
    on h.user_id = t.user_id
    and h.seq <= t.events_through
    and h.seq > t.events_through - {{ n }}
group by t.user_id, t.event_ms, t.partition_date, t.user_rating_cnt_{{ days }}d, t.user_rating_avg_prev_rating_{{ days }}d
