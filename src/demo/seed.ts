// The demo database `shop`: fake but valid-looking customers (cards pass Luhn, SSNs have valid
// areas), orders and daily sales, generated from a seeded PRNG so every run is identical.
// Seeding replaces what a previous run left (it drops and recreates its own objects).

import pg from 'pg';

export const SHOP_CUSTOMERS = 1000;
export const SHOP_ORDERS = 3000;
export const SHOP_SEED = 0x5eed_0001;

/** sfc32: small, fast, deterministic. Returns floats in [0, 1). */
export function prng(seed: number): () => number {
  let a = 0x9e3779b9;
  let b = 0x243f6a88;
  let c = 0xb7e15162;
  let d = seed >>> 0;
  const next = (): number => {
    a >>>= 0;
    b >>>= 0;
    c >>>= 0;
    d >>>= 0;
    let t = (a + b) | 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) | 0;
    c = (c << 21) | (c >>> 11);
    d = (d + 1) | 0;
    t = (t + d) | 0;
    c = (c + t) | 0;
    return (t >>> 0) / 4294967296;
  };
  for (let i = 0; i < 16; i++) next();
  return next;
}

const FIRST_NAMES = [
  'James', 'Mary', 'Robert', 'Patricia', 'John', 'Jennifer', 'Michael', 'Linda', 'David', 'Elizabeth',
  'William', 'Barbara', 'Richard', 'Susan', 'Joseph', 'Jessica', 'Thomas', 'Sarah', 'Charles', 'Karen',
  'Daniel', 'Lisa', 'Matthew', 'Nancy', 'Anthony', 'Sandra', 'Mark', 'Ashley', 'Steven', 'Emily',
  'Andrew', 'Michelle', 'Joshua', 'Amanda', 'Kevin', 'Melissa', 'Brian', 'Stephanie', 'Oliver', 'Sofia',
  'Lucas', 'Amelia', 'Mateo', 'Chloe', 'Noah', 'Hannah', 'Ethan', 'Grace', 'Leo', 'Zoe',
];
const LAST_NAMES = [
  'Smith', 'Johnson', 'Williams', 'Brown', 'Jones', 'Garcia', 'Miller', 'Davis', 'Rodriguez', 'Martinez',
  'Hernandez', 'Lopez', 'Gonzalez', 'Wilson', 'Anderson', 'Thomas', 'Taylor', 'Moore', 'Jackson', 'Martin',
  'Lee', 'Perez', 'Thompson', 'White', 'Harris', 'Sanchez', 'Clark', 'Ramirez', 'Lewis', 'Robinson',
  'Walker', 'Young', 'Allen', 'King', 'Wright', 'Scott', 'Torres', 'Nguyen', 'Hill', 'Flores',
  'Green', 'Adams', 'Nelson', 'Baker', 'Hall', 'Rivera', 'Campbell', 'Mitchell', 'Carter', 'Roberts',
];
const AREA_CODES = ['212', '213', '305', '312', '404', '415', '503', '512', '617', '702', '206', '303', '214', '615', '801'];
/** IIN prefix and the lengths it is issued in. */
const CARD_BRANDS: { prefixes: string[]; lengths: number[]; weight: number }[] = [
  { prefixes: ['4'], lengths: [16, 16, 16, 13, 19], weight: 45 }, // Visa
  { prefixes: ['51', '52', '53', '54', '55', '2221', '2720'], lengths: [16], weight: 30 }, // Mastercard
  { prefixes: ['34', '37'], lengths: [15], weight: 15 }, // American Express
  { prefixes: ['6011', '65'], lengths: [16, 19], weight: 10 }, // Discover
];
const ORDER_STATUSES: [string, number][] = [
  ['delivered', 50],
  ['shipped', 15],
  ['paid', 12],
  ['pending', 10],
  ['refunded', 5],
  ['cancelled', 8],
];

function pick<T>(rand: () => number, items: readonly T[]): T {
  return items[Math.floor(rand() * items.length)];
}

function pickWeighted<T>(rand: () => number, items: readonly { weight: number; value: T }[]): T {
  const total = items.reduce((s, i) => s + i.weight, 0);
  let r = rand() * total;
  for (const item of items) {
    r -= item.weight;
    if (r < 0) return item.value;
  }
  return items[items.length - 1].value;
}

function digits(rand: () => number, n: number): string {
  let s = '';
  for (let i = 0; i < n; i++) s += String(Math.floor(rand() * 10));
  return s;
}

/** The Luhn check digit for `payload` (all digits but the last). */
export function luhnCheckDigit(payload: string): number {
  let sum = 0;
  for (let i = 0; i < payload.length; i++) {
    // Double every second digit counting from the right of the full number, i.e. from the
    // rightmost digit of the payload.
    let d = payload.charCodeAt(payload.length - 1 - i) - 48;
    if (i % 2 === 0) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
  }
  return (10 - (sum % 10)) % 10;
}

function cardNumber(rand: () => number): string {
  const brand = pickWeighted(rand, CARD_BRANDS.map((b) => ({ weight: b.weight, value: b })));
  const prefix = pick(rand, brand.prefixes);
  const length = pick(rand, brand.lengths);
  const payload = prefix + digits(rand, length - 1 - prefix.length);
  return payload + String(luhnCheckDigit(payload));
}

function ssn(rand: () => number): string {
  let area = 0;
  for (let i = 0; i < 16; i++) {
    area = 1 + Math.floor(rand() * 899); // 001..899
    if (area !== 666) break;
  }
  if (area === 666) area = 665;
  const group = 1 + Math.floor(rand() * 99); // 01..99
  const serial = 1 + Math.floor(rand() * 9999); // 0001..9999
  return `${String(area).padStart(3, '0')}-${String(group).padStart(2, '0')}-${String(serial).padStart(4, '0')}`;
}

export interface Customer {
  name: string;
  email: string;
  phone: string;
  card_number: string;
  ssn: string;
}

export interface Order {
  customer_id: number;
  amount: string;
  status: string;
  created_at: string;
}

/** The customers, deterministic for a seed. */
export function generateCustomers(seed = SHOP_SEED, count = SHOP_CUSTOMERS): Customer[] {
  const rand = prng(seed);
  const seen = new Map<string, number>();
  const out: Customer[] = [];
  for (let i = 0; i < count; i++) {
    const first = pick(rand, FIRST_NAMES);
    const last = pick(rand, LAST_NAMES);
    const local = `${first}.${last}`.toLowerCase();
    const n = (seen.get(local) ?? 0) + 1;
    seen.set(local, n);
    out.push({
      name: `${first} ${last}`,
      email: `${local}${n > 1 ? String(n) : ''}@example.com`,
      phone: `+1-${pick(rand, AREA_CODES)}-555-01${digits(rand, 2)}`,
      card_number: cardNumber(rand),
      ssn: ssn(rand),
    });
  }
  return out;
}

/** The orders, deterministic for a seed; customer ids are 1..customers. */
export function generateOrders(seed = SHOP_SEED + 1, count = SHOP_ORDERS, customers = SHOP_CUSTOMERS): Order[] {
  const rand = prng(seed);
  const start = Date.UTC(2024, 0, 1);
  const span = 366 * 24 * 3600 * 1000;
  const statuses = ORDER_STATUSES.map(([value, weight]) => ({ value, weight }));
  const out: Order[] = [];
  for (let i = 0; i < count; i++) {
    const cents = 500 + Math.floor(rand() * 49_500); // 5.00 .. 499.99
    out.push({
      customer_id: 1 + Math.floor(rand() * customers),
      amount: `${Math.floor(cents / 100)}.${String(cents % 100).padStart(2, '0')}`,
      status: pickWeighted(rand, statuses),
      created_at: new Date(start + Math.floor(rand() * span)).toISOString(),
    });
  }
  return out;
}

export interface SeedResult {
  customers: number;
  orders: number;
  dailySales: number;
  ms: number;
}

const SCHEMA_SQL = `
DROP TABLE IF EXISTS public.orders;
DROP TABLE IF EXISTS public.customers;
DROP SCHEMA IF EXISTS analytics CASCADE;
DROP SCHEMA IF EXISTS scratch CASCADE;
CREATE TABLE public.customers (
  id serial PRIMARY KEY,
  name text NOT NULL,
  email text NOT NULL,
  phone text,
  card_number text,
  ssn text
);
CREATE TABLE public.orders (
  id serial PRIMARY KEY,
  customer_id int NOT NULL,
  amount numeric(10,2) NOT NULL,
  status text NOT NULL,
  created_at timestamptz NOT NULL
);
CREATE INDEX orders_customer_id_idx ON public.orders (customer_id);
CREATE SCHEMA analytics;
CREATE TABLE analytics.daily_sales (
  day date PRIMARY KEY,
  total numeric(12,2) NOT NULL,
  orders int NOT NULL
);
CREATE SCHEMA scratch;
`;

/**
 * Fills the database the client (or connection string) points at with the shop: tables
 * public.customers (1,000 rows), public.orders (3,000 rows), analytics.daily_sales (one row per
 * day with sales, from the orders that were not cancelled) and an empty schema scratch. Replaces
 * those objects if they exist. One transaction.
 */
export async function seedShop(target: pg.Client | string): Promise<SeedResult> {
  const started = performance.now();
  const own = typeof target === 'string';
  const client = own ? new pg.Client({ connectionString: target }) : target;
  if (own) await client.connect();
  try {
    const customers = generateCustomers();
    const orders = generateOrders();
    await client.query('BEGIN');
    try {
      await client.query(SCHEMA_SQL);
      await client.query(
        `INSERT INTO public.customers (name, email, phone, card_number, ssn)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])`,
        [
          customers.map((c) => c.name),
          customers.map((c) => c.email),
          customers.map((c) => c.phone),
          customers.map((c) => c.card_number),
          customers.map((c) => c.ssn),
        ],
      );
      await client.query(
        `INSERT INTO public.orders (customer_id, amount, status, created_at)
         SELECT * FROM unnest($1::int[], $2::numeric[], $3::text[], $4::timestamptz[])`,
        [orders.map((o) => o.customer_id), orders.map((o) => o.amount), orders.map((o) => o.status), orders.map((o) => o.created_at)],
      );
      const daily = await client.query(
        `INSERT INTO analytics.daily_sales (day, total, orders)
         SELECT (created_at AT TIME ZONE 'UTC')::date, sum(amount), count(*)
           FROM public.orders WHERE status <> 'cancelled'
          GROUP BY 1 ORDER BY 1`,
      );
      await client.query('COMMIT');
      return { customers: customers.length, orders: orders.length, dailySales: daily.rowCount ?? 0, ms: performance.now() - started };
    } catch (err) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw err;
    }
  } finally {
    if (own) await client.end();
  }
}
