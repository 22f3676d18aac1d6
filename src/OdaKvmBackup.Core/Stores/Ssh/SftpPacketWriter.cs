using System.Buffers;
using System.Buffers.Binary;
using System.Text;

namespace OdaKvmBackup.Core.Stores.Ssh;

/// <summary>
/// Builds one packet: uint32 length, byte type, then the fields (uint32/uint64 big-endian, strings as uint32 length and
/// bytes). <see cref="Finish"/> fills in the length; <see cref="FinishHeader"/> does so for a packet whose last bytes
/// (a WRITE's data) are sent separately, so data is never copied into a packet.
/// </summary>
internal sealed class SftpPacketWriter
{
    private byte[] _buffer;
    private int _length;

    /// <summary>A packet without a request id (INIT).</summary>
    public SftpPacketWriter(SftpPacketType type)
    {
        _buffer = new byte[64];
        _length = 4;
        Type = type;
        WriteByte((byte)type);
    }

    public SftpPacketType Type { get; }

    /// <summary>A request: the type, then its id.</summary>
    public SftpPacketWriter(SftpPacketType type, uint requestId)
        : this(type)
    {
        RequestId = requestId;
        WriteUInt32(requestId);
    }

    public uint RequestId { get; }

    public void WriteByte(byte value)
    {
        Ensure(1);
        _buffer[_length++] = value;
    }

    public void WriteUInt32(uint value)
    {
        Ensure(4);
        BinaryPrimitives.WriteUInt32BigEndian(_buffer.AsSpan(_length), value);
        _length += 4;
    }

    public void WriteUInt64(ulong value)
    {
        Ensure(8);
        BinaryPrimitives.WriteUInt64BigEndian(_buffer.AsSpan(_length), value);
        _length += 8;
    }

    public void WriteString(string value)
    {
        var byteCount = Encoding.UTF8.GetByteCount(value);
        WriteUInt32((uint)byteCount);
        Ensure(byteCount);
        _length += Encoding.UTF8.GetBytes(value, _buffer.AsSpan(_length));
    }

    public void WriteBytes(ReadOnlySpan<byte> value)
    {
        WriteUInt32((uint)value.Length);
        Ensure(value.Length);
        value.CopyTo(_buffer.AsSpan(_length));
        _length += value.Length;
    }

    public void WriteAttributes(SftpAttributes attributes) => attributes.WriteTo(this);

    /// <summary>The packet, its length filled in.</summary>
    public ReadOnlyMemory<byte> Finish() => FinishHeader(0);

    /// <param name="followingBytes">Bytes that will be sent right after this header as part of the same packet.</param>
    public ReadOnlyMemory<byte> FinishHeader(int followingBytes)
    {
        BinaryPrimitives.WriteUInt32BigEndian(_buffer, (uint)(_length - 4 + followingBytes));
        return _buffer.AsMemory(0, _length);
    }

    private void Ensure(int bytes)
    {
        if (_length + bytes > _buffer.Length)
            Array.Resize(ref _buffer, Math.Max(_buffer.Length * 2, _length + bytes));
    }
}
