using System.Text.Json;
using System.Text.Json.Serialization;

namespace OdaKvmBackup.Core.WayBack;

internal sealed class ManifestDisk
{
    public required string Target { get; init; }
    public required string Source { get; init; }
    public required string Format { get; init; }
    public required string File { get; init; }
    public long? SizeBytes { get; set; }
    /// <summary>The disk's virtual size (what the guest sees), as qemu-img info read it from the disk when the run
    /// was planned: for a qcow2 copy it is not the file's size. Sets of earlier builds have none.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public long? VirtualSizeBytes { get; set; }
    public long? DataBytes { get; set; }
    /// <summary>The disk's content digest, as <see cref="VmDiskBackup.ContentDigest"/> (not a sha256sum).</summary>
    public string? ContentDigest { get; set; }
    /// <summary>For a copy on another host: the SHA-256 of each segment of <see cref="SegmentSize"/> bytes that holds
    /// data, by segment number (see <see cref="CopyResult.SegmentDigests"/>), so that the copy is checked where it lies
    /// (on the server, <see cref="Stores.IBackupStore.SegmentDigestsAsync"/>), never read back over the network.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public long? SegmentSize { get; set; }
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public SortedDictionary<long, string>? SegmentDigests { get; set; }
    public bool Verified { get; set; }
    /// <summary>How the copy was checked, in words.</summary>
    public string? VerifiedBy { get; set; }
}
