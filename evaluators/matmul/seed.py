"""Seed program for matmul: alternating least squares with progressive rounding.

decompose(n, m, p) returns factor matrices U (nm x R), V (mp x R), W (pn x R) with
sum_r U[:, r] (x) V[:, r] (x) W[:, r] == T exactly, where T[i*m+j, j*p+k, k*n+i] = 1.

Strategy: start from the schoolbook decomposition (rank n*m*p, always exact) and try to lower
the rank one step at a time. Each attempt at rank R fits real factors by ALS, then rounds the
entries closest to the grid a few at a time, refitting the rest with the rounded ones held
fixed. An attempt succeeds when the fully rounded factors reproduce T exactly. Work is bounded
by a fixed budget (not by wall time), so the result depends only on the seed of np.random.
"""
import numpy as np

# EVOLVE-BLOCK-START
GRID = 1.0            # entries are rounded to multiples of 1 / GRID (2.0 = half-integers)
RIDGE = 0.01          # Tikhonov regularisation of every least-squares solve
INIT_SCALE = 0.5      # standard deviation of the random starting factors
WARM_SWEEPS = 100     # ALS sweeps before any rounding
FIX_FRACTION = 0.05   # fraction of all entries rounded and frozen per round
SWEEPS_PER_ROUND = 15 # ALS sweeps after each rounding round
ATTEMPTS_PER_RANK = 6 # random restarts before giving up on a rank
RANK_STEP = 1         # how far to lower the rank after a success
WORK_BUDGET = 1e10    # rough floating-point budget for the whole search
FREEZE = 1e6          # penalty that pins frozen entries to their rounded values


def round_to_grid(x):
    return np.round(x * GRID) / GRID


def khatri_rao(a, b):
    return (a[:, None, :] * b[None, :, :]).reshape(a.shape[0] * b.shape[0], -1)


def refit(target, design, x, frozen):
    """Least squares for each row of x in target ~ x @ design.T; frozen entries stay put."""
    rank = x.shape[1]
    gram = design.T @ design
    pins = RIDGE + FREEZE * frozen                       # (rows, rank)
    lhs = gram[None, :, :] + pins[:, :, None] * np.eye(rank)[None, :, :]
    rhs = target @ design + FREEZE * frozen * x
    return np.linalg.solve(lhs, rhs[:, :, None])[:, :, 0]


def sweep(unfolded, factors, frozen, count):
    u, v, w = factors
    for _ in range(count):
        u = refit(unfolded[0], khatri_rao(v, w), u, frozen[0])
        v = refit(unfolded[1], khatri_rao(u, w), v, frozen[1])
        w = refit(unfolded[2], khatri_rao(u, v), w, frozen[2])
    return [u, v, w]


def attempt(tensor, rank, rng):
    """One randomised try at an exact decomposition of the given rank; None on failure."""
    a, b, c = tensor.shape
    unfolded = [tensor.reshape(a, b * c),
                tensor.transpose(1, 0, 2).reshape(b, a * c),
                tensor.transpose(2, 0, 1).reshape(c, a * b)]
    factors = [rng.normal(0.0, INIT_SCALE, (d, rank)) for d in (a, b, c)]
    frozen = [np.zeros((d, rank)) for d in (a, b, c)]
    factors = sweep(unfolded, factors, frozen, WARM_SWEEPS)
    sizes = [f.size for f in factors]
    per_round = max(1, int(FIX_FRACTION * sum(sizes)))
    while True:
        flat = np.concatenate([f.ravel() for f in factors])
        fixed = np.concatenate([z.ravel() for z in frozen]) > 0
        if fixed.all():
            break
        distance = np.where(fixed, np.inf, np.abs(flat - round_to_grid(flat)))
        pick = np.argsort(distance, kind="stable")[:per_round]
        pick = pick[np.isfinite(distance[pick])]
        flat[pick] = round_to_grid(flat[pick])
        fixed[pick] = True
        splits = np.cumsum(sizes)[:-1]
        factors = [x.reshape(f.shape) for x, f in zip(np.split(flat, splits), factors)]
        frozen = [x.reshape(f.shape).astype(float) for x, f in zip(np.split(fixed, splits), factors)]
        factors = sweep(unfolded, factors, frozen, SWEEPS_PER_ROUND)
    factors = [round_to_grid(f) for f in factors]
    if np.array_equal(np.einsum("ir,jr,kr->ijk", *factors), tensor):
        return factors
    return None


def attempt_cost(tensor, rank):
    rows = sum(tensor.shape)
    per_sweep = rows * rank ** 3 + 3 * tensor.size * rank ** 2
    rounds = 1.0 / FIX_FRACTION
    return per_sweep * (WARM_SWEEPS + rounds * SWEEPS_PER_ROUND)


def search(tensor, start, rng):
    """Lower the rank from `start` while attempts keep succeeding and budget remains."""
    best = start
    rank = start[0].shape[1] - RANK_STEP
    budget = WORK_BUDGET
    while rank >= 1:
        found = None
        for _ in range(ATTEMPTS_PER_RANK):
            cost = attempt_cost(tensor, rank)
            if cost > budget:
                return best
            budget -= cost
            found = attempt(tensor, rank, rng)
            if found is not None:
                break
        if found is None:
            return best
        best = found
        rank -= RANK_STEP
    return best


# EVOLVE-BLOCK-END


def matmul_tensor(n, m, p):
    t = np.zeros((n * m, m * p, p * n))
    for i in range(n):
        for j in range(m):
            for k in range(p):
                t[i * m + j, j * p + k, k * n + i] = 1.0
    return t


def schoolbook(n, m, p):
    """The rank-nmp decomposition: one product a_ij * b_jk per (i, j, k)."""
    u = np.zeros((n * m, n * m * p))
    v = np.zeros((m * p, n * m * p))
    w = np.zeros((p * n, n * m * p))
    r = 0
    for i in range(n):
        for j in range(m):
            for k in range(p):
                u[i * m + j, r] = v[j * p + k, r] = w[k * n + i, r] = 1.0
                r += 1
    return [u, v, w]


def decompose(n, m, p):
    rng = np.random.default_rng(np.random.randint(2 ** 31))  # the sandbox seeds np.random
    u, v, w = search(matmul_tensor(n, m, p), schoolbook(n, m, p), rng)
    return u, v, w
