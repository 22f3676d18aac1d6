namespace OdaKvmBackup.Core.Host;

/// <summary>One disk of a domain, as its domain XML describes it (CD-ROMs and floppies are not listed).</summary>
public sealed class VmDisk
{
    public required string DomainName { get; init; }
    /// <summary>The guest device name, e.g. vda.</summary>
    public required string Target { get; init; }
    /// <summary>The file (or block device) the disk writes to now: an overlay while a backup runs.</summary>
    public required string? Source { get; init; }
    /// <summary>The image format of <see cref="Source"/>: qcow2 or raw.</summary>
    public required string Format { get; init; }
    public string Device { get; init; } = "disk";
    public string? Bus { get; init; }
    /// <summary>file, block, network or volume.</summary>
    public string Type { get; init; } = "file";
    /// <summary>True when the disk writes to an overlay on top of another image.</summary>
    public bool OnOverlay => BackingChain.Count > 0;
    /// <summary>The images below <see cref="Source"/>, top first (empty for a disk on its own file).</summary>
    public IReadOnlyList<string> BackingChain { get; init; } = Array.Empty<string>();
    /// <summary>Format of each image in <see cref="BackingChain"/>.</summary>
    public IReadOnlyList<string> BackingFormats { get; init; } = Array.Empty<string>();
    public bool ReadOnly { get; init; }
    public bool Shareable { get; init; }
    /// <summary>running, paused, shut off ... when the disk was listed.</summary>
    public string DomainState { get; init; } = "";
}
