using System.Buffers;
using System.Buffers.Binary;
using System.Text;

namespace OdaKvmBackup.Core.Stores.Ssh;

/// <summary>A received packet in a pooled buffer: dispose it once read.</summary>
internal sealed class SftpResponse : IDisposable
{
    private byte[]? _buffer;

    public SftpResponse(byte[] rentedBuffer, int length)
    {
        _buffer = rentedBuffer;
        Length = length;
        Type = (SftpPacketType)rentedBuffer[0];
    }

    public SftpPacketType Type { get; }
    public int Length { get; }

    /// <summary>The bytes after the type: the request id (VERSION's version) and the fields.</summary>
    public ReadOnlySpan<byte> AfterType() => _buffer.AsSpan(1, Length - 1);

    /// <summary>A reader positioned after the type and the request id.</summary>
    public SftpPacketReader Body() => new(_buffer.AsSpan(5, Length - 5));

    public void Dispose()
    {
        if (_buffer is { } buffer)
        {
            _buffer = null;
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }
}
