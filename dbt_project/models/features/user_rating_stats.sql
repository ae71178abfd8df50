{{ config(**partitioned_incremental_config()) }}
{% set w = partition_window() %}
-- One row per (user_id, timestamp) with a review in the window: the user's state just before that moment.
-- Point in time: every feature uses only events strictly before `timestamp` (the current one excluded).

with window_users as (
    select distinct user_id
    from {{ ref('stg_reviews') }}
    where partition_date >= '{{ w.min_date }}' and partition_date < '{{ w.max_date }}'
),

-- The whole earlier history of those users: "last 10 items" may reach back any distance.
history as (
    select
        r.user_id,
        r.parent_asin,
        r.rating,
        r.event_ms,
        r.partition_date,
        row_number() over (partition by r.user_id order by r.event_ms, r.parent_asin) as seq,
        -- events strictly before this moment (ties share a moment and see none of each other)
        rank() over (partition by r.user_id order by r.event_ms) - 1 as earlier_events
    from {{ ref('stg_reviews') }} as r
    inner join window_users as u on r.user_id = u.user_id
    where r.partition_date < '{{ w.max_date }}'
),

moments as (
    select distinct
        user_id,
        event_ms,
        partition_date,
        earlier_events,
        count(rating) over prev_90d as user_rating_cnt_90d,
        avg(rating) over prev_90d as user_rating_avg_prev_rating_90d
    from history
    window prev_90d as (
        partition by user_id order by event_ms
        range between {{ days_ms(90) }} preceding and 1 preceding
    )
),

targets as (
    select * from moments
    where partition_date >= '{{ w.min_date }}' and partition_date < '{{ w.max_date }}'
)

select
    t.user_id,
    {{ ms_to_timestamp('t.event_ms') }} as timestamp,
    t.user_rating_cnt_90d,
    t.user_rating_avg_prev_rating_90d,
    {{ ordered_list('h.parent_asin', 'h.seq') }} as user_rating_list_10_recent_asin,
    {{ ordered_list('h.event_ms', 'h.seq') }} as user_rating_list_10_recent_asin_timestamp,
    t.partition_date
from targets as t
left join history as h
    on h.user_id = t.user_id
    and h.seq <= t.earlier_events
    and h.seq > t.earlier_events - 10
group by t.user_id, t.event_ms, t.partition_date, t.user_rating_cnt_90d, t.user_rating_avg_prev_rating_90d
