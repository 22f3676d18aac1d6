using System.Runtime.InteropServices;

namespace OdaKvmBackup.Core.WayBack;

/// <summary>One restored disk: read back from storage and found equal to the set's manifest, by
/// <see cref="ContentDigest"/> for a set of format OdaKvmBackup/2, by <see cref="Digests"/> (the SHA-256 of its block
/// digest list) for a set of format OdaKvmBackup/3.</summary>
public sealed record RestoredDisk(string Target, string Path, string Format, long SizeBytes, long AllocatedBytes, string? ContentDigest, bool Verified)
{
    public string? Digests { get; init; }
}

/// <summary>What Restore-KvmBackup did.</summary>
public sealed class RestoredBackup
{
    /// <summary>The domain that now uses the restored disks: the new one, or the VM itself in place; null when only
    /// files were restored.</summary>
    public string? DomainName { get; init; }
    public required string SourceDomain { get; init; }
    public required string RunId { get; init; }
    public required RestoreMode Mode { get; init; }
    public string? Folder { get; init; }
    public required IReadOnlyList<RestoredDisk> Disks { get; init; }
    public string? DefinitionFile { get; init; }
    public bool Started { get; init; }
    /// <summary>The files an in-place restore replaced, kept beside the disks until you remove them.</summary>
    public IReadOnlyList<string> KeptAside { get; init; } = [];
    public IReadOnlyList<string> Notes { get; init; } = [];
}
