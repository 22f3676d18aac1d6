using System.Globalization;

namespace OdaKvmBackup.Core.WayBack;

/// <summary>What a retention policy looks at in a set: its folders (domain, run id), the time its run id names
/// (<paramref name="TimeUtc"/>: sets are ordered and aged by it), its status, and the time its manifest claims
/// (<paramref name="ClaimedUtc"/>, only checked against the run id). A run's folder of retained overlays is one too,
/// with no status (<see cref="PrunePolicy.DecideOverlays"/> looks at its time only).</summary>
internal sealed record PruneCandidate(string DomainName, string RunId, DateTime TimeUtc, BackupSetStatus? Status, DateTime? ClaimedUtc = null);

/// <summary>Whether a set goes, and why, in words a -WhatIf line can show.</summary>
internal sealed record PruneDecision(PruneCandidate Set, bool Remove, string Reason);

/// <summary>
/// Which backup sets a policy removes, per domain. A set is kept when any rule keeps it (as Proxmox's keep-*
/// options combine):
/// <list type="bullet">
/// <item>-KeepLast n keeps the n newest Complete sets;</item>
/// <item>-KeepDays d keeps every set (Complete or Incomplete) started less than d days ago;</item>
/// <item>the newest Complete set of a domain is never removed, whatever the policy says;</item>
/// <item>an InProgress set is never removed (a backup may be writing it; Repair-KvmBackup marks an interrupted one
/// Incomplete);</item>
/// <item>an Incomplete set never counts towards -KeepLast: it cannot be restored from;</item>
/// <item>sets are ordered and aged by their run id, the name of their folder; when a set of a domain is dated in the
/// future, or its manifest's time disagrees with its run id, by more than <see cref="ClockTolerance"/>, nothing of
/// that domain is removed (see <see cref="OutOfOrder"/>): the order itself cannot be trusted.</item>
/// </list>
/// </summary>
internal static class PrunePolicy
{
    /// <summary>How far a run id may be ahead of this host's clock, or a manifest's time from its run id.</summary>
    public static readonly TimeSpan ClockTolerance = TimeSpan.FromMinutes(10);

    /// <summary>The sets whose time cannot be trusted, each with why: dated in the future, or made (their manifest
    /// says) at another time than their run id names. Pruning of their domain stops.</summary>
    public static IReadOnlyList<(PruneCandidate Set, string Why)> OutOfOrder(IEnumerable<PruneCandidate> sets, DateTime nowUtc)
    {
        var found = new List<(PruneCandidate, string)>();
        foreach (var set in sets.OrderBy(s => s.DomainName, StringComparer.Ordinal).ThenBy(s => s.RunId, StringComparer.Ordinal))
        {
            if (set.TimeUtc > nowUtc + ClockTolerance)
                found.Add((set, $"its run id {set.RunId} is in the future (this host's clock says {CheckedManifest.Describe(nowUtc)})"));
            else if (set.ClaimedUtc is { } claimed && (claimed - set.TimeUtc).Duration() > ClockTolerance)
                found.Add((set, $"its backup.json says it was made at {CheckedManifest.Describe(claimed)}, its run id {set.RunId} says {CheckedManifest.Describe(set.TimeUtc)}"));
        }
        return found;
    }

    public static IReadOnlyList<PruneDecision> Decide(IEnumerable<PruneCandidate> sets, int? keepLast, int? keepDays, DateTime nowUtc)
    {
        if (keepLast is null && keepDays is null)
            throw new BackupException(ErrorIds.NoRetentionPolicy, BackupErrorCategory.InvalidArgument,
                "No retention policy was given.", "Say what to keep: -KeepLast <n>, -KeepDays <d>, or both.");
        if (keepLast is < 0 || keepDays is < 0)
            throw new BackupException(ErrorIds.NoRetentionPolicy, BackupErrorCategory.InvalidArgument,
                "-KeepLast and -KeepDays cannot be negative.", "Give 0 or more.");
        var decisions = new List<PruneDecision>();
        foreach (var domain in sets.GroupBy(s => s.DomainName, StringComparer.Ordinal).OrderBy(g => g.Key, StringComparer.Ordinal))
        {
            var newestFirst = domain.OrderByDescending(s => s.RunId, StringComparer.Ordinal).ToList();
            if (OutOfOrder(newestFirst, nowUtc) is [var first, ..])
            {
                var stopped = $"pruning of '{domain.Key}' stopped: the set {first.Set.RunId} cannot be put in order ({first.Why}); nothing of '{domain.Key}' is removed";
                decisions.AddRange(newestFirst.Select(set => new PruneDecision(set, false, stopped)));
                continue;
            }
            var completeRank = 0;
            var newestComplete = newestFirst.FirstOrDefault(s => s.Status == BackupSetStatus.Complete);
            foreach (var set in newestFirst)
            {
                var age = nowUtc - set.TimeUtc;
                var ageText = Age(age);
                var isComplete = set.Status == BackupSetStatus.Complete;
                if (isComplete)
                    completeRank++;
                var youngEnough = keepDays is { } days && age < TimeSpan.FromDays(days);
                var withinLast = isComplete && keepLast is { } last && completeRank <= last;
                string reason;
                bool remove;
                if (set.Status == BackupSetStatus.InProgress)
                {
                    (remove, reason) = (false, "InProgress: a backup may be writing it (Repair-KvmBackup marks an interrupted one Incomplete); never removed by a policy");
                }
                else if (ReferenceEquals(set, newestComplete))
                {
                    (remove, reason) = (false, $"the newest Complete set of '{set.DomainName}' ({ageText} old): never removed, whatever the policy says");
                }
                else if (withinLast)
                {
                    (remove, reason) = (false, $"Complete, {Ordinal(completeRank)} newest Complete set of '{set.DomainName}': within -KeepLast {keepLast}");
                }
                else if (youngEnough)
                {
                    (remove, reason) = (false, $"{set.Status}, {ageText} old: within -KeepDays {keepDays}");
                }
                else if (!isComplete)
                {
                    (remove, reason) = (true, $"Incomplete (cannot be restored from), {ageText} old{(keepDays is null ? "" : $", older than -KeepDays {keepDays}")}");
                }
                else
                {
                    var why = new List<string>();
                    if (keepLast is not null)
                        why.Add($"the {Ordinal(completeRank)} newest Complete set, beyond -KeepLast {keepLast}");
                    if (keepDays is not null)
                        why.Add($"{ageText} old, older than -KeepDays {keepDays}");
                    (remove, reason) = (true, "Complete, " + string.Join(", and ", why));
                }
                decisions.Add(new PruneDecision(set, remove, reason));
            }
        }
        return decisions;
    }

    /// <summary>Which retained-overlay run folders are older than <paramref name="keepDays"/> days.</summary>
    public static IReadOnlyList<PruneDecision> DecideOverlays(IEnumerable<PruneCandidate> runs, int keepDays, DateTime nowUtc)
    {
        if (keepDays < 0)
            throw new BackupException(ErrorIds.NoRetentionPolicy, BackupErrorCategory.InvalidArgument,
                "-OverlayKeepDays cannot be negative.", "Give 0 or more days.");
        return runs.OrderBy(r => r.DomainName, StringComparer.Ordinal).ThenBy(r => r.TimeUtc).Select(r =>
        {
            var age = nowUtc - r.TimeUtc;
            return age >= TimeSpan.FromDays(keepDays)
                ? new PruneDecision(r, true, $"overlays retained {Age(age)} ago, older than -OverlayKeepDays {keepDays}")
                : new PruneDecision(r, false, $"overlays retained {Age(age)} ago: within -OverlayKeepDays {keepDays}");
        }).ToList();
    }

    private static string Age(TimeSpan age) => age.TotalDays >= 1
        ? string.Create(CultureInfo.InvariantCulture, $"{age.TotalDays:0.#} days")
        : string.Create(CultureInfo.InvariantCulture, $"{Math.Max(0, age.TotalHours):0.#} hours");

    private static string Ordinal(int n) => n switch
    {
        1 => "1st",
        2 => "2nd",
        3 => "3rd",
        _ => n.ToString(CultureInfo.InvariantCulture) + "th",
    };
}
