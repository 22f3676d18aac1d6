namespace OdaKvmBackup.Core.WayBack;

/// <summary>The copy an incremental backup of one disk starts from: the newest Complete set of the same VM at the
/// same destination whose copy of the disk has the same target, format and size, and whose digest list is present
/// and matches the SHA-256 its manifest records. Paths are relative to the store and decided by
/// <see cref="BackupNames"/> from the store's own layout, never taken from a manifest.</summary>
internal sealed record DiskBase(string RunId, string CopyPath, string DigestListPath, BlockDigestList List);

/// <summary>The base found for a disk, or why there is none (the disk is then copied in full; the reason goes to
/// -Verbose and to the manifest's FullBecause).</summary>
internal sealed record BaseChoice(DiskBase? Base, string? WhyNone)
{
    public static BaseChoice None(string why) => new(null, why);
}

/// <summary>Issue 15: chooses the base of each disk of a run. (Contract only; h15-wayback fills it in.)</summary>
internal static class BaseFinder
{
    /// <summary>The base for <paramref name="disk"/> of <paramref name="domainName"/> among the sets in
    /// <paramref name="store"/> older than <paramref name="runId"/>. Never throws for what a set holds (an unreadable
    /// or forged set is no base: the reason says so); throws only for the store's own failures (unreachable).</summary>
    public static Task<BaseChoice> FindAsync(IBackupStore store, string domainName, string runId, DiskRecord disk, CancellationToken ct) =>
        Task.FromResult(BaseChoice.None("no earlier Complete set at this destination"));
}
